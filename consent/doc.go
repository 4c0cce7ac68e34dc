// Package consent will hold consent requests, grants, expiry, revocation and the hash-chained audit log that gate the live view (issue: live view with consent).
//
// It is empty until that issue lands; the layout is fixed by the design card.
package consent
