package process

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRecordedExit checks the exit Cleanup reports to the shim's delete
// action (PROTOCOL.md §1.11): the init's recorded exit when the shim wrote
// one (as containerd 2.x's runc shim does), else SIGKILL now with runc's pid.
func TestRecordedExit(t *testing.T) {
	killedAt := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name       string
		files      map[string]string
		wantPid    int
		wantStatus int
		wantAt     time.Time
		wantErr    string
	}{
		{name: "nothing recorded", wantStatus: 137, wantAt: killedAt},
		{name: "init.pid only", files: map[string]string{"init.pid": "1234"}, wantPid: 1234, wantStatus: 137, wantAt: killedAt},
		{
			name:    "recorded exit",
			files:   map[string]string{"init.pid": "1234", "exit.json": `{"timestamp":"2026-01-02T03:04:05Z","pid":1234,"status":3}`},
			wantPid: 1234, wantStatus: 3, wantAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		},
		{
			name:    "broken record",
			files:   map[string]string{"init.pid": "1234", "exit.json": `{`},
			wantPid: 1234, wantStatus: 137, wantAt: killedAt, wantErr: "exit.json",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e, err := recordedExit(dir, killedAt)
			if e.Pid != tc.wantPid || e.Status != tc.wantStatus || !e.At.Equal(tc.wantAt) {
				t.Errorf("got pid %d status %d at %s; want %d %d %s", e.Pid, e.Status, e.At, tc.wantPid, tc.wantStatus, tc.wantAt)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
		})
	}
}
