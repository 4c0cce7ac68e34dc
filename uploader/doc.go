// Package uploader will hold the bbolt spool, the tus client, TLS pinning, receipts and the wipe (issue: upload and receiver).
//
// It is empty until that issue lands; the layout is fixed by the design card.
package uploader
