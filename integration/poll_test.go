package integration

import (
	"fmt"
	"os"
	"time"
)

// poll calls cond every 20ms until it returns true or timeout passes, and
// reports whether it did. This is the only way tests wait for state they
// cannot be told about.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// readTail returns path from offset on, at most the last 64 KiB of it.
func readTail(path string, offset int64) string {
	const limit = 64 << 10
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if offset > int64(len(data)) {
		offset = 0
	}
	data = data[offset:]
	if len(data) > limit {
		data = append([]byte("...\n"), data[len(data)-limit:]...)
	}
	return string(data)
}
