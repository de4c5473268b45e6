package ui

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// xssCorpus is agent text that must come out of RenderMarkdown inert.
var xssCorpus = []string{
	`<script>window.__xss=1</script>`,
	`<img src=x onerror="window.__xss=1">`,
	`<svg onload="window.__xss=1"><circle r=1></svg>`,
	`<svg><script>window.__xss=1</script></svg>`,
	`<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>`,
	`[click](javascript:window.__xss=1)`,
	`[click](JaVaScRiPt:window.__xss=1)`,
	`[click](jav&#x61;script:window.__xss=1)`,
	`[click](&#106;avascript:window.__xss=1)`,
	"[click](java\tscript:window.__xss=1)",
	`<javascript:window.__xss=1>`,
	`[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)`,
	`![pixel](https://tracker.example/p.gif "t")`,
	`![x](x" onerror="window.__xss=1)`,
	`<a href="https://ok.example" onclick="window.__xss=1">x</a>`,
	`<details open ontoggle="window.__xss=1">`,
	`<style>body{background:url(https://tracker.example/)}</style>`,
	`<form action="https://evil.example"><button>go</button></form>`,
	`<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=1>`,
	"```html\n<script>window.__xss=1</script>\n```",
	`[ok](https://ok.example/?q="><script>window.__xss=1</script>)`,
	`<base href="https://evil.example/">`,
	`<meta http-equiv="refresh" content="0;url=https://evil.example">`,
	`<object data="x"></object><embed src="x">`,
	`[vb](vbscript:msgbox(1))`,
}

// unsafe reports the first thing in rendered HTML that could run script or
// load something: a tag outside the Markdown set, an event-handler or style
// attribute, or a URL that is not http(s)/mailto. Text is not looked at:
// "onerror=" as visible words is harmless.
func unsafe(out string) string {
	allowed := map[string]bool{"p": true, "br": true, "hr": true, "em": true, "strong": true, "del": true, "code": true,
		"pre": true, "blockquote": true, "ul": true, "ol": true, "li": true, "h1": true, "h2": true, "h3": true, "h4": true,
		"h5": true, "h6": true, "table": true, "thead": true, "tbody": true, "tr": true, "th": true, "td": true, "a": true, "img": true}
	z := html.NewTokenizer(strings.NewReader(out))
	for {
		switch z.Next() {
		case html.ErrorToken:
			return ""
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			tok := z.Token()
			if !allowed[tok.Data] {
				return "tag <" + tok.Data + ">"
			}
			for _, a := range tok.Attr {
				switch {
				case strings.HasPrefix(a.Key, "on"), a.Key == "style", a.Key == "srcdoc", a.Key == "formaction":
					return "attribute " + a.Key
				case a.Key == "href" || a.Key == "src":
					u := strings.ToLower(strings.TrimSpace(a.Val))
					if !strings.HasPrefix(u, "https:") && !strings.HasPrefix(u, "http:") && !strings.HasPrefix(u, "mailto:") {
						return a.Key + "=" + a.Val
					}
				}
			}
		}
	}
}

func TestRenderMarkdownXSSCorpus(t *testing.T) {
	for _, in := range xssCorpus {
		out := RenderMarkdown(in)
		if bad := unsafe(out); bad != "" {
			t.Errorf("RenderMarkdown(%q) = %q: unsafe %s", in, out, bad)
		}
	}
}

func TestRenderMarkdownKeepsFormatting(t *testing.T) {
	out := RenderMarkdown("Deploy **now**?\n\n- one\n- [docs](https://docs.example/x)\n\n`code`")
	for _, want := range []string{
		"<strong>now</strong>", "<li>one</li>", "<code>code</code>",
		`href="https://docs.example/x"`, `rel="nofollow noreferrer noopener"`, `target="_blank"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	// Plain text with HTML-looking characters survives as text.
	if out := RenderMarkdown("a < b && c > d"); !strings.Contains(out, "a &lt; b &amp;&amp; c &gt; d") {
		t.Errorf("comparison text became %q", out)
	}
}

func FuzzRenderMarkdown(f *testing.F) {
	for _, s := range xssCorpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := RenderMarkdown(in)
		if bad := unsafe(out); bad != "" {
			t.Fatalf("RenderMarkdown(%q) = %q: unsafe %s", in, out, bad)
		}
	})
}

// TestStringsComplete: every visible string exists in both languages, and
// every key the template uses exists.
func TestStringsComplete(t *testing.T) {
	en, zh := Keys(En), Keys(Zh)
	if strings.Join(en, ",") != strings.Join(zh, ",") {
		t.Fatalf("zh and en have different keys:\nen %v\nzh %v", en, zh)
	}
	for _, k := range en {
		if strings.TrimSpace(T(En, k)) == "" || strings.TrimSpace(T(Zh, k)) == "" {
			t.Errorf("key %q is empty in a language", k)
		}
	}
	tpl, err := files.ReadFile("templates/page.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\{\{t \.L "([^"]+)"\}\}`).FindAllSubmatch(tpl, -1) {
		if _, ok := texts[En][string(m[1])]; !ok {
			t.Errorf("template uses unknown string %q", m[1])
		}
	}
	js, err := files.ReadFile("static/page.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`S(?:\.([a-zA-Z]+)|\['([a-zA-Z.]+)'\])`).FindAllSubmatch(js, -1) {
		key := string(m[1]) + string(m[2])
		if _, ok := texts[En]["js."+key]; !ok {
			t.Errorf("page.js uses unknown string %q", key)
		}
	}
}

func TestNegotiateLang(t *testing.T) {
	for _, c := range []struct {
		query, accept string
		want          Lang
	}{
		{"", "", En},
		{"zh", "en-US", Zh},
		{"en", "zh-CN", En},
		{"fr", "zh-CN,zh;q=0.9", Zh},
		{"", "zh-TW;q=0.8, en;q=0.9", En},
		{"", "de-DE, zh;q=0.5", Zh},
		{"", "de-DE", En},
		{"ZH", "", En},
		{"<script>", "", En},
		{"", "zh;q=abc", En},
		{"", "zh;q=2", En},
		{"", "zh;q=0", En},
		{"", strings.Repeat("x,", 10000) + "zh", En},
	} {
		if got := NegotiateLang(c.query, c.accept); got != c.want {
			t.Errorf("NegotiateLang(%q, %.40q) = %s, want %s", c.query, c.accept, got, c.want)
		}
	}
}

func TestParseTheme(t *testing.T) {
	for in, want := range map[string]string{"dark": "dark", "light": "light", "": "", "DARK": "", `"><x`: "", "auto": ""} {
		if got := ParseTheme(in); got != want {
			t.Errorf("ParseTheme(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderPage(t *testing.T) {
	for _, d := range []PageData{
		{Lang: En, SessionID: "123e4567-e89b-12d3-a456-426614174000", StaticBase: "../feedback-static/"},
		{Lang: Zh, Theme: "dark", SessionID: "123e4567-e89b-12d3-a456-426614174000", StaticBase: "../feedback-static/"},
		{Lang: En, Theme: "light", StaticBase: "../feedback-static/"},
	} {
		var buf bytes.Buffer
		if err := RenderPage(&buf, d); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		if strings.Contains(out, "<script>") || regexp.MustCompile(`\son\w+=`).MatchString(out) || strings.Contains(out, " style=") {
			t.Errorf("page has inline script, handler or style:\n%s", out)
		}
		if !strings.Contains(out, `lang="`+d.Lang.HTMLLang()+`"`) || !strings.Contains(out, T(d.Lang, "brand")) {
			t.Errorf("page not in %s", d.Lang)
		}
		if d.Theme != "" && !strings.Contains(out, `data-theme="`+d.Theme+`"`) {
			t.Errorf("theme %q not set", d.Theme)
		}
		if d.SessionID == "" && !strings.Contains(out, `data-state="notfound"`) {
			t.Error("page without a valid id does not show not-found")
		}
		for _, name := range []string{"page.css", "page.js"} {
			a, _ := LookupAsset(name)
			if !strings.Contains(out, d.StaticBase+name+"?v="+a.Version) {
				t.Errorf("page does not link %s with its version", name)
			}
		}
	}
}
