package mcpfeedback

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestDefaultsDocumented: every default of the one table (Defaults) stands
// in the README's configuration table, on its subdirective's row, and in
// its field's doc comment — so that the three never disagree.
func TestDefaultsDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	module, err := os.ReadFile("module.go")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, part := range strings.Split(first, "`")[1:] {
			name, _, _ := strings.Cut(part, " ")
			if name != "" && !strings.ContainsAny(name, "/") {
				rows[name] += line
			}
		}
	}
	check(t, reflect.ValueOf(Defaults()), rows, string(module))
}

// check tests each default of d, the Handler or a block of it (such as
// login's), against the README rows and module.go.
func check(t *testing.T, d reflect.Value, rows map[string]string, module string) {
	t.Helper()
	typ := d.Type()
	for i := range typ.NumField() {
		f, v := typ.Field(i), d.Field(i)
		if !f.IsExported() || v.IsZero() {
			continue
		}
		if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
			check(t, v.Elem(), rows, module)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		var want string
		switch x := v.Interface().(type) {
		case caddy.Duration:
			switch d := time.Duration(x); {
			case d%time.Hour == 0:
				want = strconv.Itoa(int(d/time.Hour)) + "h"
			case d%time.Minute == 0:
				want = strconv.Itoa(int(d/time.Minute)) + "m"
			default:
				want = strconv.Itoa(int(d/time.Second)) + "s"
			}
		case int:
			want = strconv.Itoa(x)
		case string:
			want = x
		case *bool:
			want = map[bool]string{true: "on", false: "off"}[*x]
		case []string:
			want = strings.Join(x, " ")
		default:
			t.Fatalf("%s: no rule for %T", f.Name, x)
		}
		row, ok := rows[name]
		if !ok {
			t.Errorf("%s (%s): no row in the README's configuration table", name, f.Name)
			continue
		}
		if !strings.Contains(row, "`"+want+"`") {
			t.Errorf("%s: the README's row does not show the default `%s`: %s", name, want, row)
		}
		// The field's doc comment names the default too.
		decl := strings.Index(module, "\t"+f.Name+" ")
		doc := module[:max(decl, 0)]
		doc = doc[strings.LastIndex(doc, "\n\n")+1:]
		if decl < 0 || !strings.Contains(doc, "Default: "+want) && !strings.Contains(doc, "`"+want+"` (the default)") {
			t.Errorf("%s: its doc comment in module.go does not give the default %s", f.Name, want)
		}
	}
}
