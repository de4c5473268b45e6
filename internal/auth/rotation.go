package auth

// Shared-secret rotation: a secret's key id (kid) is in every token Mint
// signs, and a Verifier may hold previous secrets that verify, never sign.

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/golang-jwt/jwt/v5"
)

// SecretKeyID is the kid of tokens signed with secret: the first 8 hex
// characters of its SHA-256. It tells which secret signed a token without
// saying anything useful about the secret: a guess at a secret can be
// checked against any token's HMAC already.
func SecretKeyID(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:4])
}

// hsKeys are the shared secrets a Verifier accepts: the current one first,
// then previous ones, and each one's kid.
type hsKeys struct {
	all   [][]byte
	byKID map[string][][]byte // two secrets may share a kid (1 in 2^32): both are tried
}

func newHSKeys(secrets [][]byte) *hsKeys {
	k := &hsKeys{byKID: map[string][][]byte{}}
	for _, s := range secrets {
		if containsSecret(k.all, s) {
			continue
		}
		k.all = append(k.all, s)
		id := SecretKeyID(s)
		k.byKID[id] = append(k.byKID[id], s)
	}
	return k
}

func containsSecret(list [][]byte, s []byte) bool {
	for _, x := range list {
		if string(x) == string(s) {
			return true
		}
	}
	return false
}

// hsKeyfunc is the keyfunc of the shared-secret path when there is more
// than one secret, or when JWKS mode is on too. The header checks are
// v.key's. A kid that names one of the secrets picks it; a token without
// kid (minted before kids, or by other tooling) is tried against every
// secret, current first, so the first rotation does not cut off tokens
// minted before it. A kid that names none of them is tried against every
// secret as well, unless JWKS mode is on: then a foreign kid on an HS256
// token is refused without any key being tried, as it names a key of the
// identity provider or none at all.
func (v *Verifier) hsKeyfunc(t *jwt.Token) (any, error) {
	if _, err := v.key(t); err != nil {
		return nil, err
	}
	k := v.modes.hs
	var keys [][]byte
	switch kid, _ := t.Header["kid"].(string); {
	case kid != "" && len(k.byKID[kid]) > 0:
		keys = k.byKID[kid]
	case t.Header["kid"] != nil && v.modes.remote != nil:
		return nil, errUnknownKID
	default:
		keys = k.all
	}
	if len(keys) == 1 {
		return keys[0], nil
	}
	set := jwt.VerificationKeySet{}
	for _, s := range keys {
		set.Keys = append(set.Keys, s)
	}
	return set, nil
}
