package uploader_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines; tusd's delayed request contexts
// in the in-process receiver end on their own after the test (as the
// receiver's own tests allow).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tus/tusd/v2/pkg/handler.newDelayedContext.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}
