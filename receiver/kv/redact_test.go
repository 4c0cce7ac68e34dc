package kv

import (
	"strings"
	"testing"
)

// TestRedact: no form of connection string keeps its password in the text
// messages and the data directory's DatabaseFile show.
func TestRedact(t *testing.T) {
	for _, tt := range []struct {
		name, dsn, want string
	}{
		{"url user info", "postgres://ub:s3cret-pw@db.example/ub?sslmode=verify-full", "postgres://ub:xxxxx@db.example/ub?sslmode=verify-full"},
		{"url query", "postgres:///ub?host=%2Frun%2Fpg&password=s3cret-pw&user=ub", "postgres:///ub?host=%2Frun%2Fpg&password=xxxxx&user=ub"},
		{"key=value", "host=db.example user=ub password=s3cret-pw dbname=ub", "host=db.example user=ub password=xxxxx dbname=ub"},
		{"no password", "postgres://ub@db.example/ub", "postgres://ub@db.example/ub"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.dsn); got != tt.want {
				t.Errorf("Redact = %q, want %q", got, tt.want)
			}
			if msg := redactErr(errString("failed for "+tt.dsn+" with s3cret-pw"), tt.dsn); strings.Contains(msg, "s3cret-pw") && strings.Contains(tt.dsn, "s3cret-pw") {
				t.Errorf("redactErr kept the password: %q", msg)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }
