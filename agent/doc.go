// Package agent will hold the daemon: typed config, lifecycle, control socket, systemd notify, metrics and the live-view server (issue: the daemon).
//
// It is empty until that issue lands; the layout is fixed by the design card.
package agent
