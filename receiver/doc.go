// Package receiver is the cloud side of uploadbox. Today it holds Export,
// which checks the chain of a recording's sealed segments, decrypts them
// with the organisation's key and joins their media into one playable MP4.
// Ingest (tus), commit and receipts, enrollment, viewer accounts and
// storage come with the upload issue; the layout is fixed by the design card.
package receiver
