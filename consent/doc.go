// Package consent is the box's consent ledger: the gate the live view asks
// before it sends a single frame or audio sample to a viewer.
//
// A viewer asks (Ledger.Ask) and gets a pending request the observed
// teacher sees (Ledger.List); the teacher accepts it for a limited time,
// with or without audio, or denies it. Grants are per viewer and end when
// they expire, when the teacher revokes them, or when the recording
// session ends; Ledger.Watch tells the live view at once, so it can close
// that viewer's peer connections. The ledger is a bbolt file: a restart
// never revives an expired or revoked grant. Every request, decision,
// join, leave, revocation and expiry is appended to the hash-chained audit
// log (internal/audit), which VerifyAudit checks.
package consent
