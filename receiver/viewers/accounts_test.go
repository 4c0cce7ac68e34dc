package viewers

import (
	"errors"
	"testing"
	"time"
)

// TestDisableEnableRemove: a disabled account cannot sign in (with its
// right password; a wrong one is refused as usual) and its tokens are
// refused; enabling it lets it sign in but keeps refusing tokens issued
// before; a removed account's name can be reused and the new account
// refuses the old one's tokens. Each change is audited.
func TestDisableEnableRemove(t *testing.T) {
	r, c, logPath := open(t)
	const pw = "Some-password-12"
	if err := r.Add("coach", pw); err != nil {
		t.Fatal(err)
	}
	issued := c.t.Unix() // a token issued at sign-in
	if err := r.TokenAccepted("coach", issued); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}

	c.t = c.t.Add(10 * time.Second)
	if err := r.Disable("coach"); err != nil {
		t.Fatal(err)
	}
	if err := r.Disable("coach"); err == nil {
		t.Fatal("disabling twice is no error")
	}
	if err := r.Login("coach", pw, "test"); !errors.Is(err, ErrDisabled) {
		t.Fatalf("disabled login: %v", err)
	}
	if err := r.Login("coach", "Wrong-password-12", "test"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("disabled login with a wrong password: %v", err)
	}
	if err := r.TokenAccepted("coach", issued); !errors.Is(err, ErrDisabled) {
		t.Fatalf("token of a disabled account: %v", err)
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || !list[0].Disabled || !list[0].DisabledAt.Equal(c.t) {
		t.Fatalf("list: %+v %v", list, err)
	}

	c.t = c.t.Add(10 * time.Second)
	if err := r.Enable("coach"); err != nil {
		t.Fatal(err)
	}
	if err := r.Enable("coach"); err == nil {
		t.Fatal("enabling an enabled account is no error")
	}
	if err := r.Login("coach", pw, "test"); err != nil {
		t.Fatalf("login after enable: %v", err)
	}
	if err := r.TokenAccepted("coach", issued); !errors.Is(err, ErrTokenWithdrawn) {
		t.Fatalf("a token from before the disable, after enable: %v", err)
	}
	if err := r.TokenAccepted("coach", c.t.Unix()); err != nil {
		t.Fatalf("a token issued after enable: %v", err)
	}

	issued = c.t.Unix()
	if err := r.Remove("coach"); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove("coach"); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("removing twice: %v", err)
	}
	if err := r.TokenAccepted("coach", issued); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("token of a removed account: %v", err)
	}
	if err := r.Login("coach", pw, "test"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("login of a removed account: %v", err)
	}
	// The same second: the new account still refuses the old token.
	if err := r.Add("coach", "Another-password-34"); err != nil {
		t.Fatalf("the name is not reusable: %v", err)
	}
	if err := r.TokenAccepted("coach", issued); !errors.Is(err, ErrTokenWithdrawn) {
		t.Fatalf("the removed account's token, on the new account: %v", err)
	}
	if err := r.TokenAccepted("coach", issued+1); err != nil {
		t.Fatalf("the new account's token: %v", err)
	}
	if err := r.Disable("nobody"); !errors.Is(err, ErrUnknownViewer) {
		t.Fatalf("disable unknown: %v", err)
	}

	var got []string
	for _, e := range entries(t, logPath) {
		switch e.Event {
		case "viewer.disable", "viewer.enable", "viewer.remove":
			got = append(got, e.Event+" "+e.Identity+" "+e.Outcome)
		}
	}
	want := []string{"viewer.disable coach ok", "viewer.disable coach failed", "viewer.enable coach ok", "viewer.enable coach failed",
		"viewer.remove coach ok", "viewer.remove coach failed", "viewer.disable nobody failed"}
	if len(got) != len(want) {
		t.Fatalf("audited %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("audited %q, want %q", got, want)
		}
	}
}
