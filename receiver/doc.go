// Package receiver will hold the cloud side: tus ingest, commit and receipts, enrollment, viewer accounts, storage (issue: upload and receiver).
//
// It is empty until that issue lands; the layout is fixed by the design card.
package receiver
