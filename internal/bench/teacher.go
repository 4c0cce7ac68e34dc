package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

// teacherBench measures the teacher's page on the receiver, with the
// box's daemon connected over its control connection and a coach's page
// beside it, both in Chromium on loopback: time from the coach's "Ask to
// watch" to the request showing on the teacher's page, and from the
// teacher's "Accept 15 min" to the first frame the coach's page shows.
// Each round takes one of each (interleaved), with a fresh coach page;
// the box's session is restarted between rounds so that the next ask is
// a new request.
func teacherBench(bin string, rounds int, modules string) error {
	dir, err := os.MkdirTemp("", "uploadbox-bench-teacher-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	liveAddr, err := freeLoopback()
	if err != nil {
		return err
	}
	// A coach signs in for each round: more than the default 10 sign-ins a
	// minute from one address.
	box, err := startBoxOn(benchNet{listen: "127.0.0.1:0", serve: []string{"--auth-rate", "10/s", "--auth-burst", "20"}}, bin, dir,
		"live: {enabled: true, listen: \""+liveAddr+"\"}\nlink: {ping_interval: 300ms, ping_timeout: 700ms, retry_max: 1s}\n")
	if err != nil {
		return err
	}
	defer box.stop()
	if out, err := box.ctl("session", "start", "--for", "30m"); err != nil {
		return fmt.Errorf("session start: %v: %s", err, out)
	}
	const password = "Correct-Horse-Battery-9"
	urcv := filepath.Join(bin, "uploadbox-receiver")
	for _, a := range [][]string{{"coach-c"}, {"tess", "--role", "teacher"}} {
		cmd := exec.Command(urcv, append([]string{"viewers", "add", a[0], "--password-stdin", "--data", box.data}, a[1:]...)...)
		cmd.Stdin = strings.NewReader(password + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("viewers add %s: %v: %s", a[0], err, out)
		}
		if out, err := exec.Command(urcv, "viewers", "allow", a[0], "bench", "--data", box.data).CombinedOutput(); err != nil {
			return fmt.Errorf("viewers allow %s: %v: %s", a[0], err, out)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	open := func(name string) (*livetest.Page, error) {
		p, err := livetest.OpenPage(ctx, "https://"+box.addr+"/", livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844})
		if err != nil {
			return nil, err
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		_, err = p.Wait(wctx, func(s livetest.PageState) bool { return s.SignIn })
		for _, f := range [][2]string{{"#name", name}, {"#password", password}} {
			if err == nil {
				err = p.Fill(wctx, f[0], f[1])
			}
		}
		if err == nil {
			err = p.Click(wctx, "#signin-button")
		}
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("%s signs in: %w", name, err)
		}
		return p, nil
	}
	// room waits for the teacher's view of the box to satisfy ok.
	room := func(p *livetest.Page, what string, ok func(r *livetest.TeacherRoom) bool) (livetest.PageState, error) {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		s, err := p.Wait(wctx, func(s livetest.PageState) bool {
			r := s.Teacher.Room("bench")
			return s.Teacher != nil && s.Teacher.State == "live" && r != nil && ok(r)
		})
		if err != nil {
			return s, fmt.Errorf("the teacher's page never showed %s: %w", what, err)
		}
		return s, nil
	}
	teacher, err := open("tess")
	if err != nil {
		return err
	}
	defer teacher.Close()
	idle := func(r *livetest.TeacherRoom) bool {
		return r.Online && r.Recording && len(r.Pending) == 0 && len(r.Watching) == 0
	}
	if _, err := room(teacher, "the box online and recording", idle); err != nil {
		return err
	}

	var shown, firsts []time.Duration
	for i := range rounds {
		coach, err := open("coach-c")
		if err != nil {
			return err
		}
		err = func() error {
			defer coach.Close()
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			if _, err := coach.Wait(wctx, func(s livetest.PageState) bool { return len(s.Rooms) == 1 && s.Rooms[0].Ask }); err != nil {
				return fmt.Errorf("the coach's rooms: %w", err)
			}
			asked := time.Now()
			if err := coach.Click(wctx, `button.ask[data-room="bench"]`); err != nil {
				return err
			}
			s, err := room(teacher, "the request", func(r *livetest.TeacherRoom) bool { return len(r.Pending) == 1 })
			if err != nil {
				return err
			}
			req := s.Teacher.Room("bench").Pending[0]
			shown = append(shown, time.UnixMilli(req.Shown).Sub(asked))
			accepted := time.Now()
			if err := teacher.Click(wctx, `li[data-t-request="`+req.Request+`"] button[data-t-action="accept"][data-for="15m"]`); err != nil {
				return err
			}
			st, err := coach.Wait(wctx, func(s livetest.PageState) bool { return !s.FirstFrame.IsZero() })
			if err != nil {
				return fmt.Errorf("no frame at the coach: %w", err)
			}
			firsts = append(firsts, livetest.FirstShown(st, time.Second/30).Sub(accepted))
			return nil
		}()
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		// A new lesson: the grant ends, the next ask is a new request.
		for _, c := range [][]string{{"session", "stop"}, {"session", "start", "--for", "30m"}} {
			if out, err := box.ctl(c...); err != nil {
				return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
			}
		}
		if _, err := room(teacher, "the next lesson", idle); err != nil {
			return err
		}
	}
	spread := func(ds []time.Duration) (float64, float64, float64) {
		slices.Sort(ds)
		return ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1])
	}
	fmt.Printf("teacher's page on the receiver (box daemon connected, Chromium on loopback, %d rounds, interleaved):\n", rounds)
	m, lo, hi := spread(shown)
	fmt.Printf("  coach asks -> request shown on the teacher's page, median  %6.0f ms   (goal <= 300; range %.0f–%.0f)\n", m, lo, hi)
	m, lo, hi = spread(firsts)
	fmt.Printf("  teacher accepts -> first frame at the coach, median         %6.0f ms   (goal <= 600; range %.0f–%.0f)\n", m, lo, hi)
	return nil
}
