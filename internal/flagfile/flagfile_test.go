package flagfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type opts struct {
	name    string
	hosts   []string
	ttl     time.Duration
	n       int
	verbose bool
}

var schema = Schema{Sections: []string{"turn"}, Rename: map[string]string{"host": "hosts"}, Skip: []string{"config"}}

func flags(o *opts) *pflag.FlagSet {
	f := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.StringVar(&o.name, "name", "dflt", "")
	f.StringSliceVar(&o.hosts, "host", nil, "")
	f.DurationVar(&o.ttl, "turn-ttl", time.Minute, "")
	f.IntVar(&o.n, "turn-max-per-credential", 4, "")
	f.BoolVar(&o.verbose, "verbose", false, "")
	f.String("config", "", "")
	return f
}

func TestApply(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		file string
		want opts
	}{
		{"empty file", nil, "", opts{name: "dflt", ttl: time.Minute, n: 4}},
		{"every key", nil, "name: x\nhosts: [a, b]\nturn:\n  ttl: 2d\n  max_per_credential: 9\nverbose: true\n",
			opts{name: "x", hosts: []string{"a", "b"}, ttl: 48 * time.Hour, n: 9, verbose: true}},
		{"one value for a list", nil, "hosts: a.example\n", opts{name: "dflt", hosts: []string{"a.example"}, ttl: time.Minute, n: 4}},
		{"empty key is the default", nil, "name:\nturn:\n", opts{name: "dflt", ttl: time.Minute, n: 4}},
		{"the command line wins", []string{"--name", "cli", "--host", "c"}, "name: file\nhosts: [a]\nturn: {ttl: 5m}\n",
			opts{name: "cli", hosts: []string{"c"}, ttl: 5 * time.Minute, n: 4}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var o opts
			f := flags(&o)
			if err := f.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(tt.file), 0o600)
			if _, err := schema.Apply(f, path); err != nil {
				t.Fatal(err)
			}
			if o.name != tt.want.name || strings.Join(o.hosts, ",") != strings.Join(tt.want.hosts, ",") || o.ttl != tt.want.ttl || o.n != tt.want.n || o.verbose != tt.want.verbose {
				t.Errorf("got %+v, want %+v", o, tt.want)
			}
		})
	}
}

func TestApplyProblems(t *testing.T) {
	var o opts
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("config: x\nturn:\n  ttl: soon\n  max_per_credential: [1]\nverbose: maybe\nname: {a: b}\n"), 0o600)
	_, err := schema.Apply(flags(&o), path)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"5 problem(s)",
		"config (line 1): unknown key", // the config file's own flag is no key
		`turn.ttl (line 3): "soon" is not a duration`,
		"turn.max_per_credential (line 4): takes one value, not a list",
		`verbose (line 5): "maybe" is not true or false`,
		"name (line 6): expected a value, not a mapping",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

// Args gives a fresh flag set what the command line set, and Differ
// finds what a file changed.
func TestArgsAndDiffer(t *testing.T) {
	var a, b opts
	fa, fb := flags(&a), flags(&b)
	if err := fa.Parse([]string{"--host", "x,y", "--turn-ttl", "3m"}); err != nil {
		t.Fatal(err)
	}
	if err := fb.Parse(Args(fa)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(b.hosts, ",") != "x,y" || b.ttl != 3*time.Minute || b.name != "dflt" {
		t.Fatalf("fresh set: %+v", b)
	}
	if d := schema.Differ(fa, fb); len(d) != 0 {
		t.Fatalf("Differ = %v, want none", d)
	}
	fb.Set("name", "other")
	if d := schema.Differ(fa, fb); strings.Join(d, " ") != "name" {
		t.Fatalf("Differ = %v, want [name]", d)
	}
}

func TestWhere(t *testing.T) {
	lines := map[string]int{"turn-ttl": 3, "name": 7}
	for _, tt := range []struct{ err, want string }{
		{"--turn-ttl 0s: use 1m to 24h", "c.yaml line 3, turn.ttl: --turn-ttl 0s: use 1m to 24h"},
		{"--name x needs --turn-ttl", "c.yaml line 7, name: --name x needs --turn-ttl"},
		{"--turn-ttl-max 5: too many", "--turn-ttl-max 5: too many"}, // another flag
		{"--host a: bad", "--host a: bad"},                           // not from the file
	} {
		if got := schema.Where(errors.New(tt.err), "c.yaml", lines).Error(); got != tt.want {
			t.Errorf("Where(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
