package liveview

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// UI serves the page and its script and style under prefix (e.g. "/ui/").
// It holds no data and needs no credentials: the page asks for a token
// and reads everything from the events stream.
func UI(prefix string) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	files := http.StripPrefix(prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Nothing but our own files, no framing by other sites.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
