// Package control is the daemon's local control socket: a unix socket
// (mode 0660, one group) carrying one JSON request and one JSON response
// per connection. The CLI uses it for sessions, the queue and consent, so
// it never opens the daemon's files itself.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// MaxRequest is the largest request accepted, in bytes.
const MaxRequest = 64 << 10

// Request is one call.
type Request struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
	// UID and PID of the caller, from the socket's peer credentials (-1
	// when the kernel gave none), and the user name of UID if it has one.
	UID  int    `json:"-"`
	PID  int    `json:"-"`
	User string `json:"-"`
}

// Caller names the caller for the audit log and the daemon's log:
// "uid:1000(alice)", or "uid:1000" for a uid without a user name.
func (r Request) Caller() string {
	if r.UID < 0 {
		return "uid:unknown"
	}
	c := "uid:" + strconv.Itoa(r.UID)
	if r.User != "" {
		c += "(" + r.User + ")"
	}
	return c
}

// Decode unmarshals the request's parameters into v, strictly.
func (r Request) Decode(v any) error {
	if len(r.Params) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(r.Params))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return &Error{Code: "bad-request", Message: fmt.Sprintf("%s: bad parameters: %v", r.Method, err)}
	}
	return nil
}

type response struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Code   string          `json:"code,omitempty"`
}

// Error is a refusal with a machine-readable code, returned by handlers
// and reconstructed by the client.
type Error struct {
	Code    string // e.g. "not-found", "bad-request", "conflict", "unavailable"
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an *Error.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Handler answers one request. Its result is marshalled to JSON.
type Handler func(ctx context.Context, req Request) (any, error)

// Server is a listening control socket.
type Server struct {
	ln   *net.UnixListener
	path string
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the socket at path (mode 0660, group group if not empty).
// A stale socket left by a crash is replaced; a socket another daemon is
// answering on is an error.
func Listen(path, group string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(path) > 107 {
		return nil, fmt.Errorf("control socket path %s is %d bytes, longer than the 107 a unix socket allows: set control.socket to a shorter path", path, len(path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use: another uploadbox daemon runs (stop it first)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket %s: %w", path, err)
		}
	}
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("control.group %q: %v (create the group or change control.group)", group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	old := syscall.Umask(0o117) // the socket is created 0660, never wider
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control socket: give it to group %s: %w", group, err)
		}
	}
	return &Server{ln: ln, path: path, log: log}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers requests until ctx ends, then closes the socket and waits
// for the calls in progress.
func (s *Server) Serve(ctx context.Context, h Handler) error {
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	defer s.wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control socket: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c, h)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn, h Handler) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	req := Request{UID: -1, PID: -1}
	if raw, err := c.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
				req.UID, req.PID = int(cred.Uid), int(cred.Pid)
			}
		})
	}
	if req.UID >= 0 {
		if u, err := user.LookupId(strconv.Itoa(req.UID)); err == nil {
			req.User = u.Username
		}
	}
	r := bufio.NewReader(&limitedReader{c, MaxRequest})
	line, err := r.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return
	}
	var resp response
	if err := json.Unmarshal(line, &req); err != nil || req.Method == "" {
		resp = response{Error: "request is not a JSON object with a method", Code: "bad-request"}
	} else {
		result, err := h(ctx, req)
		if err != nil {
			resp.Error = err.Error()
			resp.Code = "error"
			var ce *Error
			if errors.As(err, &ce) {
				resp.Code = ce.Code
			}
			s.log.Debug("control call failed", "method", req.Method, "uid", req.UID, "err", err)
		} else {
			resp.OK = true
			if resp.Result, err = json.Marshal(result); err != nil {
				resp = response{Error: "internal: " + err.Error(), Code: "error"}
			}
		}
	}
	out, _ := json.Marshal(resp)
	c.Write(append(out, '\n'))
}

type limitedReader struct {
	c interface{ Read([]byte) (int, error) }
	n int
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request too large")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= n
	return n, err
}

// ErrNotRunning means nothing answers on the socket.
var ErrNotRunning = errors.New("the uploadbox daemon is not running")

// Call sends one request to the daemon at socket and decodes its result
// into result (if not nil).
func Call(ctx context.Context, socket, method string, params, result any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("%w (no daemon at %s: start it with `systemctl start uploadbox` or `uploadbox run --config FILE`)", ErrNotRunning, socket)
		case errors.Is(err, syscall.EACCES):
			return fmt.Errorf("control socket %s: permission denied (add this user to the socket's group, e.g. uploadbox)", socket)
		}
		return fmt.Errorf("control socket %s: %w", socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	req := struct {
		Method string `json:"method"`
		Params any    `json:"params,omitempty"`
	}{method, params}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control socket %s: %w", socket, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("control socket %s: no answer: %w", socket, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("control socket %s: bad answer: %w", socket, err)
	}
	if !resp.OK {
		return &Error{Code: resp.Code, Message: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}
