package viewers

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

// DefaultTokenTTL is the lifetime of a token issued at login.
const DefaultTokenTTL = 15 * time.Minute

// LoginRequest is the body of POST /v1/login.
type LoginRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// LoginResponse carries the viewer token.
type LoginResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	// Role is the account's role (RoleViewer, RoleTeacher, RoleAdmin):
	// the page shows the teacher's view for a teacher.
	Role string `json:"role"`
}

// LoginHandler serves POST /v1/login: a password login that returns a
// viewer token signed with key, valid for ttl. Wrong credentials get 401
// with a generic message, a locked account (or a name that failed as
// often) 423 with reason "locked", a disabled account given its right
// password 403 with reason "disabled", a full hashing queue 503 with
// Retry-After.
type LoginHandler struct {
	reg *Registry
	key ed25519.PrivateKey
	ttl time.Duration
	log *slog.Logger
}

// NewLoginHandler returns the login handler; ttl 0 means DefaultTokenTTL.
func NewLoginHandler(reg *Registry, key ed25519.PrivateKey, ttl time.Duration, log *slog.Logger) (*LoginHandler, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 || ttl > viewtoken.MaxTTL {
		return nil, viewtoken.ErrBadTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LoginHandler{reg: reg, key: key, ttl: ttl, log: log}, nil
}

// ServeHTTP handles one login attempt.
func (h *LoginHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req LoginRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		// Audited too: a login attempt, even a garbled one.
		h.reg.fail("viewer.login", "", r.RemoteAddr, "denied", "malformed request body")
		reply(w, http.StatusBadRequest, map[string]string{"error": `login: the body must be {"name": …, "password": …}`})
		return
	}
	err := h.reg.Login(req.Name, req.Password, r.RemoteAddr)
	switch {
	case errors.Is(err, ErrLocked):
		reply(w, http.StatusLocked, map[string]string{"error": "account locked: ask an administrator to unlock it", "reason": "locked"})
		return
	case errors.Is(err, ErrDisabled):
		reply(w, http.StatusForbidden, map[string]string{"error": "account disabled: ask an administrator to enable it", "reason": "disabled"})
		return
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "too many logins in progress: try again in a second", "reason": "busy"})
		return
	case errors.Is(err, ErrBadCredentials):
		reply(w, http.StatusUnauthorized, map[string]string{"error": "wrong name or password", "reason": "credentials"})
		return
	case err != nil:
		h.log.Error("login failed", "viewer", req.Name, "err", err)
		reply(w, http.StatusInternalServerError, map[string]string{"error": "login failed on the server"})
		return
	}
	role, err := h.reg.Role(req.Name)
	if err != nil {
		h.log.Error("role of viewer", "viewer", req.Name, "err", err)
		reply(w, http.StatusInternalServerError, map[string]string{"error": "login failed on the server"})
		return
	}
	now := h.reg.now()
	tok, err := viewtoken.MintRole(h.key, viewtoken.IssuerReceiver, req.Name, role, h.ttl, now)
	if err != nil {
		h.log.Error("mint viewer token", "viewer", req.Name, "err", err)
		reply(w, http.StatusInternalServerError, map[string]string{"error": "login failed on the server"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	reply(w, http.StatusOK, LoginResponse{Token: tok, Expires: time.Unix(now.Add(h.ttl).Unix(), 0).UTC(), Role: role})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
