package process

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestExitFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadExit(dir); !errors.Is(err, errNoExit) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("loadExit of an empty bundle = %v, want errNoExit and ErrNotExist", err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := saveExit(dir, Exit{Pid: 42, Status: 3, At: at}); err != nil {
		t.Fatal(err)
	}
	e, err := loadExit(dir)
	if err != nil || e.Pid != 42 || e.Status != 3 || !e.At.Equal(at) {
		t.Fatalf("loadExit = %+v, %v", e, err)
	}
	// The shape containerd 2.x's runc shim writes (go-runc Exit).
	b, _ := os.ReadFile(filepath.Join(dir, "exit.json"))
	if want := `{"timestamp":"2026-01-02T03:04:05.000000006Z","pid":42,"status":3}`; string(b) != want {
		t.Errorf("exit.json = %s, want %s", b, want)
	}
	for _, bad := range []string{`{`, `{"pid":0,"status":1,"timestamp":"2026-01-02T03:04:05Z"}`, `{"pid":1,"status":1}`} {
		if err := os.WriteFile(filepath.Join(dir, "exit.json"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadExit(dir); !errors.Is(err, errNoExit) {
			t.Errorf("loadExit(%s) = %v, want errNoExit", bad, err)
		}
	}
}
