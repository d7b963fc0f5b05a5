package stdio

import (
	"testing"

	"github.com/leanshim/leanshim/leakcheck"
)

// TestMain fails the package if its tests leave goroutines (copiers,
// reader watchers, logger waiters) or file descriptors behind. The shim's
// /dev/null for discarding (devNull) stays open once first used.
func TestMain(m *testing.M) {
	leakcheck.Main(m, func(target string) bool { return target == "/dev/null" })
}
