package tus_test

import (
	"context"
	"log"
	"net/http"
	"net/url"
	"os"

	"github.com/uploadbox/uploadbox/uploader/tus"
)

// Create an upload for a sealed segment and send it; run Upload again with the
// same URL after a restart to resume where the server stopped.
func ExampleClient_Upload() {
	ctx := context.Background()
	endpoint, _ := url.Parse("https://receiver.example:8443/files/")
	c := tus.NewClient(http.DefaultClient, endpoint, tus.Options{
		Header: func() http.Header { return http.Header{"Authorization": {"Bearer …"}} },
	})
	f, err := os.Open("seg-000001.ubx")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	u, err := c.Create(ctx, fi.Size(), map[string]string{"filename": fi.Name()})
	if err != nil {
		log.Fatal(err)
	}
	// Store u durably (the spool does) before sending, so a restart resumes.
	if err := c.Upload(ctx, u, f, fi.Size(), nil); err != nil {
		log.Fatal(err)
	}
}
