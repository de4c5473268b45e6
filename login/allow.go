package login

import (
	"fmt"
	"strings"
)

// The ID-token claims that can name a person.
const (
	ClaimSub               = "sub"
	ClaimEmail             = "email"
	ClaimPreferredUsername = "preferred_username"
)

// AllowList says who may sign in: exact ids, whole email domains
// ("@example.com", with claim email only) or everyone ("*").
type AllowList struct {
	all     bool
	ids     map[string]bool
	domains map[string]bool
}

// NewAllowList checks entries for claim.
func NewAllowList(entries []string, claim string) (*AllowList, error) {
	a := &AllowList{ids: map[string]bool{}, domains: map[string]bool{}}
	if len(entries) == 0 {
		return nil, fmt.Errorf("allow lists nobody: name the ids or @domains that may sign in, or *")
	}
	for _, e := range entries {
		switch {
		case e == "*":
			a.all = true
		case strings.HasPrefix(e, "@"):
			if claim != ClaimEmail {
				return nil, fmt.Errorf("allow %q: a domain needs claim email (the claim is %s)", e, claim)
			}
			dom := strings.ToLower(e[1:])
			if dom == "" || strings.ContainsAny(dom, "@/ ") || !strings.Contains(dom, ".") && dom != "localhost" {
				return nil, fmt.Errorf("allow %q: not a domain", e)
			}
			a.domains[dom] = true
		case validID(e):
			if claim == ClaimEmail {
				e = strings.ToLower(e)
			}
			a.ids[e] = true
		default:
			return nil, fmt.Errorf("allow %q: not an id (no spaces or control characters, at most %d bytes)", e, maxID)
		}
	}
	if a.all && len(entries) > 1 {
		return nil, fmt.Errorf("allow * lets everyone in; list nothing else beside it")
	}
	return a, nil
}

// Allows reports whether id may sign in. For emails the comparison
// ignores case, as mail domains (and, in practice, providers) do.
func (a *AllowList) Allows(id, claim string) bool {
	if a.all {
		return true
	}
	if claim == ClaimEmail {
		id = strings.ToLower(id)
		if at := strings.LastIndexByte(id, '@'); at > 0 && a.domains[id[at+1:]] {
			return true
		}
	}
	return a.ids[id]
}
