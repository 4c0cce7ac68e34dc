package viewers

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/uploadbox/uploadbox/receiver/kv"
)

// Roles of an account. Every account has one; an account stored before
// roles existed is a RoleViewer.
const (
	// RoleViewer is a coach: asks to watch the rooms it is allowed.
	RoleViewer = "viewer"
	// RoleTeacher answers for the rooms it is allowed: it sees who asks
	// and who watches, and decides (the teacher endpoints).
	RoleTeacher = "teacher"
	// RoleAdmin may do what a teacher does, for the rooms it is allowed.
	RoleAdmin = "admin"
)

// Roles lists the roles, least first.
var Roles = []string{RoleViewer, RoleTeacher, RoleAdmin}

// ErrBadRole: a role that is not one of Roles.
var ErrBadRole = errors.New("unknown role (use viewer, teacher or admin)")

// ParseRole checks a role name; "" is RoleViewer.
func ParseRole(s string) (string, error) {
	if s == "" {
		return RoleViewer, nil
	}
	if !slices.Contains(Roles, s) {
		return "", fmt.Errorf("%w: %q", ErrBadRole, s)
	}
	return s, nil
}

// Teaches reports whether role may use the teacher endpoints.
func Teaches(role string) bool { return role == RoleTeacher || role == RoleAdmin }

func (rec *record) role() string {
	if rec.Role == "" {
		return RoleViewer
	}
	return rec.Role
}

// SetRole changes name's role (audited as viewer.role, naming the old and
// the new one).
func (r *Registry) SetRole(name, role string) error {
	parsed, err := ParseRole(role)
	if err != nil {
		return errors.Join(err, r.audit("viewer.role", name, "local", "failed", "unknown role "+strings.ToValidUTF8(trim(role, 32), "?")))
	}
	role = parsed
	var old string
	err = r.db.Update(func(tx kv.Tx) error {
		rec, err := get(tx, name)
		if err != nil {
			return err
		}
		old = rec.role()
		rec.Role = role
		return put(tx, rec)
	})
	outcome, detail := "ok", "role "+old+" -> "+role
	if err != nil {
		outcome, detail = "failed", "role -> "+role
	}
	return errors.Join(err, r.audit("viewer.role", name, "local", outcome, detail))
}

// Role returns name's role; an unknown account has none ("" and
// ErrUnknownViewer).
func (r *Registry) Role(name string) (string, error) {
	var role string
	err := r.db.View(func(tx kv.Tx) error {
		rec, err := get(tx, name)
		if err != nil {
			return err
		}
		role = rec.role()
		return nil
	})
	return role, err
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
