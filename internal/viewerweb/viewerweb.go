// Package viewerweb is the live-view page, one viewer served by two sites:
// the box on its LAN (box.html: the viewer pastes a viewer token) and the
// receiver to coaches anywhere (coach.html: sign in, pick a room, ask to
// watch). Both pages load the same viewer.js and viewer.css; the
// receiver's page also loads teacher.js, the view a signed-in teacher gets,
// and fleet.js, the boxes an administrator sees.
//
// It imports neither side, so the box binary links nothing of the
// receiver for it.
package viewerweb

import (
	"embed"
	"net/http"
)

//go:embed web
var files embed.FS

// Page is the HTML a site serves at "/".
type Page string

// The two pages.
const (
	Box   Page = "box.html"
	Coach Page = "coach.html"
)

// Patterns are the http.ServeMux patterns Handler serves, each for GET.
var Patterns = []string{"GET /{$}", "GET /viewer.js", "GET /viewer.css", "GET /teacher.js", "GET /fleet.js"}

// Handler serves page at "/" with its script and style sheet, under a
// strict Content-Security-Policy (same-origin scripts, styles and fetches
// only; video from blob: streams).
func Handler(page Page) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ctype := "web/"+string(page), "text/html; charset=utf-8"
		switch r.URL.Path {
		case "/viewer.js":
			name, ctype = "web/viewer.js", "text/javascript; charset=utf-8"
		case "/teacher.js":
			name, ctype = "web/teacher.js", "text/javascript; charset=utf-8"
		case "/fleet.js":
			name, ctype = "web/fleet.js", "text/javascript; charset=utf-8"
		case "/viewer.css":
			name, ctype = "web/viewer.css", "text/css; charset=utf-8"
		}
		b, err := files.ReadFile(name)
		if err != nil {
			http.Error(w, "page missing from the build", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		w.Write(b)
	})
}
