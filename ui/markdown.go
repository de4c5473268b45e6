package ui

import (
	"bytes"
	"regexp"
	"sync"

	"github.com/microcosm-cc/bluemonday"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"
)

// The agent's message is untrusted text. It goes through two independent
// layers so that one mistake is not enough for stored XSS:
//
//  1. goldmark with its defaults: raw HTML is omitted (never WithUnsafe) and
//     dangerous link targets (javascript:, vbscript:, data: other than
//     images) are emptied;
//  2. bluemonday with an allow-list of the tags Markdown produces, links
//     forced to rel="nofollow noopener noreferrer" and a new tab, and only
//     http(s)/mailto URLs.
//
// The page's Content-Security-Policy is the third layer: no inline script,
// no remote images (an agent cannot track the person with a pixel).
var (
	md = goldmark.New(
		goldmark.WithExtensions(extension.Strikethrough, extension.Table),
		goldmark.WithParserOptions(parser.WithASTTransformers(util.Prioritized(demoteHeadings{}, 100))),
	)

	policyOnce sync.Once
	policy     *bluemonday.Policy
)

func sanitizer() *bluemonday.Policy {
	policyOnce.Do(func() {
		p := bluemonday.NewPolicy()
		p.AllowElements("p", "br", "hr", "em", "strong", "del", "code", "pre", "blockquote",
			"ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
			"table", "thead", "tbody", "tr", "th", "td")
		p.AllowAttrs("start").Matching(regexp.MustCompile(`^[0-9]{1,6}$`)).OnElements("ol")
		p.AllowAttrs("align").Matching(regexp.MustCompile(`^(left|right|center)$`)).OnElements("th", "td")
		p.AllowAttrs("href").OnElements("a")
		// Remote images stay in the markup so that the person sees that
		// there was one (its alt text); CSP img-src refuses to load them.
		p.AllowAttrs("src", "alt", "title").OnElements("img")
		p.AllowURLSchemes("http", "https", "mailto")
		p.RequireParseableURLs(true)
		p.AllowRelativeURLs(false)
		p.RequireNoFollowOnLinks(true)
		p.RequireNoReferrerOnLinks(true)
		p.AddTargetBlankToFullyQualifiedLinks(true) // adds noopener too
		policy = p
	})
	return policy
}

// RenderMarkdown turns the agent's message into safe HTML.
func RenderMarkdown(src string) string {
	var buf bytes.Buffer
	if err := md.Convert([]byte(src), &buf); err != nil {
		// goldmark only fails on writer errors, which a bytes.Buffer has
		// none of; fall back to nothing rather than to raw text.
		return ""
	}
	return sanitizer().Sanitize(buf.String())
}

// demoteHeadings moves the agent's headings one level down (# → h2), so
// that the page's own h1 stays the one main heading.
type demoteHeadings struct{}

func (demoteHeadings) Transform(doc *ast.Document, _ text.Reader, _ parser.Context) {
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if h, ok := n.(*ast.Heading); ok && entering {
			h.Level = min(h.Level+1, 6)
		}
		return ast.WalkContinue, nil
	})
}
