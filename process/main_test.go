package process

import (
	"os"
	"testing"
)

// TestMain lets the test binary be the user namespace holder that
// openUserns starts as /proc/self/exe, as cmd/shim's main does.
func TestMain(m *testing.M) {
	if os.Args[0] == UsernsHolderArg0 {
		os.Exit(HoldUserns())
	}
	os.Exit(m.Run())
}
