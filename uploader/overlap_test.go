package uploader_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// holdLimit bounds how long a held commit waits for the next segment's
// bytes; the overlap makes them arrive at once, the serial drain never.
const holdLimit = 20 * time.Second

// sent closes a channel per segment once the receiver confirmed its last
// byte, as the drain's progress callback reports it.
type sent struct {
	mu   sync.Mutex
	done map[string]chan struct{}
}

func newSent(names []string) *sent {
	s := &sent{done: map[string]chan struct{}{}}
	for _, n := range names {
		s.done[n] = make(chan struct{})
	}
	return s
}

func (s *sent) progress(name string, off, size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.done[name]; off == size && ch != nil {
		close(ch)
		s.done[name] = nil
	}
}

// wait reports whether name's bytes were all sent within holdLimit.
func (s *sent) wait(name string) bool {
	s.mu.Lock()
	ch := s.done[name]
	s.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-time.After(holdLimit):
		return false
	}
}

func shaOf(t *testing.T, sp *spool.Spool, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		rec, err := sp.Get(n)
		if err != nil {
			t.Fatal(err)
		}
		_, sum := rec.Hash()
		out = append(out, hex.EncodeToString(sum[:]))
	}
	return out
}

func sizeOf(t *testing.T, sp *spool.Spool, name string) int64 {
	t.Helper()
	rec, err := sp.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Size
}

// TestDrainSendsNextWhileCommitting: while a segment's commit is held at
// the receiver, the next segment's bytes are all sent; commits still go
// one at a time in queue order, and each segment is reported and wiped in
// order with its receipt stored. The serial drain fails it: it sends
// nothing while a commit is outstanding.
func TestDrainSendsNextWhileCommitting(t *testing.T) {
	r := newRig(t)
	sp, names := r.spoolWith(t, 3)
	s := newSent(names)
	var missed []int
	r.hold = func(n int, _ *http.Request) {
		if n+1 < len(names) && !s.wait(names[n+1]) {
			r.mu.Lock()
			missed = append(missed, n)
			r.mu.Unlock()
		}
	}
	var reported []string
	var wipedBefore []bool // at each report, whether every earlier segment was wiped
	up := uploader.New(r.st, sp, nil)
	sum, err := up.Drain(t.Context(), func(res uploader.Result) {
		i := slices.Index(names, res.Name)
		ok := true
		for _, n := range names[:max(i, 0)] {
			rec, _ := sp.Get(n)
			ok = ok && rec.State == spool.Wiped
		}
		reported = append(reported, res.Name)
		wipedBefore = append(wipedBefore, ok)
	}, s.progress)
	if err != nil || sum.Segments != 3 {
		t.Fatalf("Drain: %+v, %v", sum, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(missed) > 0 {
		t.Errorf("while the commits %v were outstanding the next segment was not sent within %s", missed, holdLimit)
	}
	if r.maxOpen != 1 {
		t.Errorf("%d commits were outstanding at once, want 1", r.maxOpen)
	}
	if want := shaOf(t, sp, names...); !slices.Equal(r.committed, want) {
		t.Errorf("commits in the order %v, want %v", r.committed, want)
	}
	if !slices.Equal(reported, names) || slices.Contains(wipedBefore, false) {
		t.Errorf("reported %v (earlier ones wiped: %v), want %v in order", reported, wipedBefore, names)
	}
	for _, n := range names {
		if rec, _ := sp.Get(n); rec.State != spool.Wiped || len(rec.Receipt) == 0 {
			t.Errorf("%s is %s with a receipt of %d bytes, want wiped with its receipt", n, rec.State, len(rec.Receipt))
		}
	}
	var size int64
	for _, n := range names {
		size += sizeOf(t, sp, n)
	}
	if got := up.Stats().BytesSent; got != size {
		t.Errorf("%d bytes sent, want each segment once (%d)", got, size)
	}
}

// TestDrainRefusedCommitWithNextSent: the first segment's commit is
// refused after the second segment was all sent. The second is never
// committed before the first is settled, is not marked anything but
// uploading at its offset while it waits, and is never sent again.
func TestDrainRefusedCommitWithNextSent(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		name   string
		status int
		body   string
		// want
		first   spool.State // after the drain
		commits []int       // segment of each commit, in order
		errIs   error
		errAny  bool
		// sends of the first segment's bytes in this drain
		firstSends int64
	}{
		{name: "incomplete: the first resumes, then the second", status: 409, body: `{"error":"not finished","reason":"incomplete","offset":0}`,
			first: spool.Wiped, commits: []int{0, 0, 1}, firstSends: 1},
		{name: "mismatch: the first is sent afresh, then the second", status: 409, body: `{"error":"other bytes","reason":"mismatch"}`,
			first: spool.Wiped, commits: []int{0, 0, 1}, firstSends: 2},
		{name: "exists: the first is quarantined, the second committed", status: 409, body: `{"error":"stored with other bytes","reason":"exists"}`,
			first: spool.Quarantined, commits: []int{0, 1}, firstSends: 1},
		{name: "quota: both kept for later", status: 413, body: `{"error":"quota used up","reason":"quota"}`,
			first: spool.Uploading, commits: []int{0}, errAny: true, firstSends: 1},
		{name: "device-inactive: both kept, the box is refused", status: 403, body: `{"error":"device is not active","reason":"device-inactive"}`,
			first: spool.Uploading, commits: []int{0}, errIs: uploader.ErrDeviceRefused, firstSends: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, names := r.spoolWith(t, 2)
			s := newSent(names)
			r.mu.Lock()
			r.commits, r.committed, r.maxOpen = 0, nil, 0
			r.hold = func(n int, _ *http.Request) {
				if n == 0 && !s.wait(names[1]) {
					t.Errorf("the second segment was not sent while the first one's commit was outstanding")
				}
			}
			r.rewrite = func(n int) (int, string, bool) { return tt.status, tt.body, n == 0 }
			r.mu.Unlock()
			t.Cleanup(func() {
				r.mu.Lock()
				r.hold, r.rewrite = nil, nil
				r.mu.Unlock()
			})
			var reported []string
			up := uploader.New(r.st, sp, nil)
			_, err := up.Drain(t.Context(), func(res uploader.Result) { reported = append(reported, res.Name) }, s.progress)
			switch {
			case tt.errIs != nil && !errors.Is(err, tt.errIs):
				t.Fatalf("Drain: %v, want %v", err, tt.errIs)
			case tt.errAny && err == nil:
				t.Fatal("Drain succeeded, want an error")
			case tt.errIs == nil && !tt.errAny && err != nil:
				t.Fatalf("Drain: %v", err)
			}
			sha := shaOf(t, sp, names...)
			var want []string
			for _, i := range tt.commits {
				want = append(want, sha[i])
			}
			r.mu.Lock()
			committed, maxOpen := r.committed, r.maxOpen
			r.mu.Unlock()
			if !slices.Equal(committed, want) || maxOpen != 1 {
				t.Errorf("commits %v (at most %d at once), want %v one at a time", committed, maxOpen, want)
			}
			first, _ := sp.Get(names[0])
			second, _ := sp.Get(names[1])
			if first.State != tt.first {
				t.Errorf("first segment is %s, want %s", first.State, tt.first)
			}
			size0, size1 := sizeOf(t, sp, names[0]), sizeOf(t, sp, names[1])
			if got, want := up.Stats().BytesSent, tt.firstSends*size0+size1; got != want {
				t.Errorf("%d bytes sent, want %d (the first segment %d time(s), the second once)", got, want, tt.firstSends)
			}
			if err == nil {
				if second.State != spool.Wiped || !slices.Equal(reported, names) {
					t.Errorf("second segment %s, reported %v; want it wiped after the first", second.State, reported)
				}
				return
			}
			// The drain stopped: the second segment waits, all sent, for its commit.
			if second.State != spool.Uploading || second.Offset != second.Size || second.UploadURL == "" || len(second.Receipt) != 0 || len(reported) != 0 {
				t.Fatalf("second segment %+v, reported %v; want it uploading at its full size, not committed", second, reported)
			}
			r.mu.Lock()
			r.hold, r.rewrite = nil, nil
			r.mu.Unlock()
			again := uploader.New(r.st, sp, nil)
			sum, err := again.Drain(t.Context(), nil, nil)
			if err != nil || sum.Segments != 2 {
				t.Fatalf("the next drain: %+v, %v", sum, err)
			}
			if n := again.Stats().BytesSent; n != 0 {
				t.Errorf("the next drain sent %d bytes again, want none: both were at the receiver", n)
			}
		})
	}
}

// TestDrainStoppedWhileOverlapping: the box stops while the first
// segment's commit is outstanding and the second segment is all sent,
// once before the receiver saw the commit (the drain cancelled) and once
// after it committed (the receipt lost, as in a kill in the commit
// window). The next drain, a new Uploader as after a restart, commits
// both, each stored once, sending no byte again.
func TestDrainStoppedWhileOverlapping(t *testing.T) {
	r := newRig(t)
	for _, lost := range []bool{false, true} {
		name := map[bool]string{false: "cancelled before the commit", true: "receipt lost"}[lost]
		t.Run(name, func(t *testing.T) {
			sp, names := r.spoolWith(t, 2)
			s := newSent(names)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r.mu.Lock()
			r.commits = 0
			r.hold = func(n int, req *http.Request) {
				if n != 0 {
					return
				}
				if !s.wait(names[1]) {
					t.Errorf("the second segment was not sent while the first one's commit was outstanding")
				}
				if !lost {
					cancel()
					<-req.Context().Done()
				}
			}
			r.lose = func(n int) bool { return lost && n == 0 }
			r.mu.Unlock()
			t.Cleanup(func() {
				r.mu.Lock()
				r.hold, r.lose = nil, nil
				r.mu.Unlock()
			})
			sum, err := uploader.New(r.st, sp, nil).Drain(ctx, nil, s.progress)
			if err == nil || sum.Segments != 0 {
				t.Fatalf("Drain: %+v, %v; want it stopped with nothing committed", sum, err)
			}
			if !lost && !errors.Is(err, context.Canceled) {
				t.Errorf("Drain: %v, want context.Canceled", err)
			}
			for _, n := range names {
				rec, _ := sp.Get(n)
				if rec.State != spool.Uploading || rec.Offset != rec.Size {
					t.Fatalf("%s is %s at %d of %d, want uploading, all sent", n, rec.State, rec.Offset, rec.Size)
				}
				if _, err := os.Stat(sp.Path(rec)); err != nil {
					t.Fatalf("%s: %v", n, err)
				}
			}
			r.mu.Lock()
			r.hold, r.lose = nil, nil
			r.mu.Unlock()
			up := uploader.New(r.st, sp, nil)
			var results []uploader.Result
			sum, err = up.Drain(t.Context(), func(res uploader.Result) { results = append(results, res) }, nil)
			if err != nil || sum.Segments != 2 || len(results) != 2 {
				t.Fatalf("after the restart: %+v, %+v, %v", sum, results, err)
			}
			if results[0].Name != names[0] || results[0].Repeated != lost || results[1].Repeated {
				t.Errorf("results %+v, want %s first (repeated: %v), then %s", results, names[0], lost, names[1])
			}
			if n := up.Stats().BytesSent; n != 0 {
				t.Errorf("after the restart %d bytes were sent again, want none", n)
			}
		})
	}
}

// TestDrainQuarantineWhileCommitting: the second segment is quarantined
// (the receiver loses every upload of it) while the first one's commit is
// outstanding, and that commit is then refused: the quarantine is still
// reported (the daemon audits it from the report), the first segment is
// kept queued.
func TestDrainQuarantineWhileCommitting(t *testing.T) {
	r := newRig(t)
	sp, names := r.spoolWith(t, 2)
	lost := map[string]bool{} // upload paths of the second segment
	r.mu.Lock()
	r.tus = func(w http.ResponseWriter, req *http.Request, forward http.Handler) bool {
		if req.Method == http.MethodPost && strings.Contains(req.Header.Get("Upload-Metadata"), base64.StdEncoding.EncodeToString([]byte(names[1]))) {
			forward.ServeHTTP(w, req)
			loc, _ := url.Parse(w.Header().Get("Location"))
			r.mu.Lock()
			lost[loc.Path] = true
			r.mu.Unlock()
			return true
		}
		r.mu.Lock()
		gone := lost[req.URL.Path]
		r.mu.Unlock()
		if gone {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"no such upload","reason":"not-found"}`)
		}
		return gone
	}
	r.hold = func(n int, _ *http.Request) {
		if n != 0 {
			return
		}
		for deadline := time.Now().Add(holdLimit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if rec, _ := sp.Get(names[1]); rec.State == spool.Quarantined {
				return
			}
		}
		t.Errorf("the second segment was not quarantined while the first one's commit was outstanding")
	}
	r.rewrite = func(n int) (int, string, bool) { return 413, `{"error":"quota used up","reason":"quota"}`, n == 0 }
	r.mu.Unlock()
	var reported []uploader.Result
	sum, err := uploader.New(r.st, sp, nil).Drain(t.Context(), func(res uploader.Result) { reported = append(reported, res) }, nil)
	if err == nil {
		t.Fatal("Drain succeeded, want the refused commit's error")
	}
	if len(reported) != 1 || reported[0].Name != names[1] || reported[0].Quarantined == nil || sum.Quarantined != 1 {
		t.Fatalf("reported %+v (summary %+v), want the second segment's quarantine", reported, sum)
	}
	if first, _ := sp.Get(names[0]); first.State != spool.Uploading || first.Offset != first.Size {
		t.Errorf("first segment %s at %d of %d, want uploading, all sent", first.State, first.Offset, first.Size)
	}
}

// TestDrainCreatesNextWhileSending: the upload of the next segment is
// created, and recorded in the spool, while the segment before it is
// still being sent: the first segment's PATCH is held at the receiver
// until the second one's creation went through. Each segment's upload is
// still created once and its bytes sent once. When that early creation
// fails, the segment's own round creates its upload. The drain that
// created each upload only when it took the segment up fails it: every
// hold runs out.
func TestDrainCreatesNextWhileSending(t *testing.T) {
	r := newRig(t)
	for _, refuse := range []bool{false, true} {
		name := map[bool]string{false: "created ahead", true: "early creation refused"}[refuse]
		t.Run(name, func(t *testing.T) {
			sp, names := r.spoolWith(t, 3)
			meta := func(req *http.Request) string {
				for i, n := range names {
					if strings.Contains(req.Header.Get("Upload-Metadata"), base64.StdEncoding.EncodeToString([]byte(n))) {
						return names[i]
					}
				}
				return ""
			}
			var mu sync.Mutex
			created := map[string]chan struct{}{} // closed once the segment's upload exists
			for _, n := range names {
				created[n] = make(chan struct{})
			}
			posts := map[string]int{}
			uploadOf := map[string]string{} // upload path -> segment
			var missed []string
			r.mu.Lock()
			r.tus = func(w http.ResponseWriter, req *http.Request, forward http.Handler) bool {
				switch req.Method {
				case http.MethodPost:
					n := meta(req)
					mu.Lock()
					posts[n]++
					first := posts[n] == 1
					mu.Unlock()
					if refuse && first && n != names[0] {
						w.WriteHeader(http.StatusServiceUnavailable)
						return true
					}
					forward.ServeHTTP(w, req)
					loc, _ := url.Parse(w.Header().Get("Location"))
					mu.Lock()
					uploadOf[loc.Path] = n
					if ch := created[n]; ch != nil {
						close(ch)
						created[n] = nil
					}
					mu.Unlock()
					return true
				case http.MethodPatch:
					mu.Lock()
					n := uploadOf[req.URL.Path]
					i := slices.Index(names, n)
					var next chan struct{}
					if i >= 0 && i+1 < len(names) {
						next = created[names[i+1]]
					}
					mu.Unlock()
					if next == nil || refuse {
						return false
					}
					select {
					case <-next:
					case <-time.After(holdLimit):
						mu.Lock()
						missed = append(missed, n)
						mu.Unlock()
					}
				}
				return false
			}
			r.mu.Unlock()
			t.Cleanup(func() {
				r.mu.Lock()
				r.tus = nil
				r.mu.Unlock()
			})
			up := uploader.New(r.st, sp, nil)
			sum, err := up.Drain(t.Context(), nil, nil)
			if err != nil || sum.Segments != len(names) {
				t.Fatalf("Drain: %+v, %v", sum, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(missed) > 0 {
				t.Errorf("while %v were sent the next segment's upload was not created within %s", missed, holdLimit)
			}
			for _, n := range names {
				want := 1
				if refuse && n != names[0] {
					want = 2 // the refused early one, then its own round's
				}
				if posts[n] != want {
					t.Errorf("%s: %d creations, want %d", n, posts[n], want)
				}
				if rec, _ := sp.Get(n); rec.State != spool.Wiped {
					t.Errorf("%s is %s, want wiped", n, rec.State)
				}
			}
			var size int64
			for _, n := range names {
				size += sizeOf(t, sp, n)
			}
			if got := up.Stats().BytesSent; got != size {
				t.Errorf("%d bytes sent, want each segment once (%d)", got, size)
			}
		})
	}
}
