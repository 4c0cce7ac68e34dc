// Package uploader drains the box's spool (uploader/spool) to the receiver:
// tus uploads resumed from the receiver's offset (uploader/tus), the commit,
// and the receiver's signed receipt checked and stored before the local file
// is wiped. While one segment commits, the next one's bytes are sent: at
// most one commit is outstanding and segments are committed and wiped in
// queue order. A refused commit is acted on by the receiver's reason, else by
// its status: resume, a bounded fresh upload of the same file, quarantine of
// the segment (kept on disk, no longer blocking the others), or, when the
// receiver refuses the box itself, an error wrapping ErrDeviceRefused that
// keeps every segment queued.
package uploader
