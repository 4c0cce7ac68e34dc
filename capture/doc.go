// Package capture will hold camera and microphone sources, the single encoder, fan-out and the fMP4 segmenter (issue: capture and recording).
//
// It is empty until that issue lands; the layout is fixed by the design card.
package capture
