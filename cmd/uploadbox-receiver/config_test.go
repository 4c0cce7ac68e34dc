package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/internal/confcheck"
)

// The packaged config loads, equals serve's defaults apart from the keys
// it sets on purpose, and names every key of serve, so that an admin sees
// each option (a flag added to serve needs its line in the example).
func TestPackagedConfigLoads(t *testing.T) {
	const path = "../../packaging/receiver.yaml"
	serve := newServeCommand()
	f := serve.Flags()
	lines, err := serveSchema.Apply(f, path)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Lookup("data").Value.String(); got != "/var/lib/uploadbox-receiver" {
		t.Errorf("data = %q", got)
	}
	if got := f.Lookup("listen").Value.String(); got != "0.0.0.0:8443" {
		t.Errorf("listen = %q", got)
	}
	onPurpose := map[string]bool{"data": true, "listen": true}
	f.VisitAll(func(fl *pflag.Flag) {
		if _, set := lines[fl.Name]; set && !onPurpose[fl.Name] && fl.Value.String() != fl.DefValue {
			t.Errorf("%s: the example sets %s, serve's default is %s", serveSchema.Key(fl.Name), fl.Value, fl.DefValue)
		}
	})
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f.VisitAll(func(fl *pflag.Flag) {
		if fl.Name == "help" || fl.Name == "config" {
			return
		}
		key := serveSchema.Key(fl.Name)
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !regexp.MustCompile(`(?m)^\s*#?` + regexp.QuoteMeta(leaf) + `:`).Match(text) {
			t.Errorf("packaging/receiver.yaml does not show the key %s (--%s): add it with its default and a comment", key, fl.Name)
		}
	})
}

func TestServeSchemaKeys(t *testing.T) {
	for flag, key := range map[string]string{
		"data": "data", "hostname": "hostnames", "audit-retention": "audit.retention",
		"turn-max-per-credential": "turn.max_per_credential", "s3-path-style": "s3.path_style",
		"request-timeout": "request_timeout", "viewer-token-ttl": "viewer.token_ttl", "web-cert": "web.cert",
	} {
		if got := serveSchema.Key(flag); got != key {
			t.Errorf("Key(%s) = %s, want %s", flag, got, key)
		}
	}
}

// Every problem of a file is reported at once, each with its key and
// line; values are checked by the flag they set.
func TestServeConfigProblems(t *testing.T) {
	src := `data: /srv/r
hostname: receiver.example
listen: [a, b]
audit:
  retention: 180days
  max_bytes: lots
s3:
  bucket: b
  bucket: c
web: 0.0.0.0:443
turn:
  lisen: :3478
`
	path := filepath.Join(t.TempDir(), "receiver.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := serveSchema.Apply(newServeCommand().Flags(), path)
	var ce *confcheck.Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *confcheck.Error", err)
	}
	for _, want := range []string{
		path + ": 7 problem(s):",
		"hostname (line 2): unknown key (did you mean hostnames?)",
		"listen (line 3): takes one value, not a list",
		`audit.retention (line 5): "180days" is not a duration`,
		`audit.max_bytes (line 6): "lots" is not a whole number`,
		"s3.bucket (line 9): given twice",
		"web (line 10): expected a mapping of keys",
		"turn.lisen (line 12): unknown key (did you mean turn.listen?)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}
