package procfs

import (
	"os"
	"testing"
)

func TestStatField(t *testing.T) {
	const plain = "4242 (containerd-shim) S 1 4242 4242 0 -1 4194560 700 0 0 0 1 2 0 0 20 0 5 0 12345 1000 200\n"
	tests := []struct {
		name, line string
		n          int
		want       string
		wantOK     bool // the field is there (it may be empty of digits)
	}{
		{"state", plain, 3, "S", true},
		{"flags", plain, 9, "4194560", true},
		{"num_threads", plain, 20, "5", true},
		{"last field, newline", plain, 24, "200", true},
		{"past the end", plain, 25, "", false},
		{"comm with spaces and parens", "7 (a) b (c)) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 17 0 1 2 3", 20, "17", true},
		{"comm with a field-like tail", "42 (a) S (b) R 1 42 42 0 -1 4 1 0", 3, "R", true},
		{"last field, no newline", "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 12", 20, "12", true},
		{"too short", "7 (x) S 1 7", 20, "", false},
		{"no comm", "7 x S 1", 3, "", false},
		{"comm is not a field after ')'", plain, 2, "", false},
		{"empty", "", 3, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := StatField([]byte(tc.line), tc.n)
			if string(got) != tc.want || (got != nil) != tc.wantOK {
				t.Fatalf("StatField(%q, %d) = %q, want %q", tc.line, tc.n, got, tc.want)
			}
		})
	}
}

func TestStatUint(t *testing.T) {
	tests := []struct {
		name, line string
		n          int
		want       uint64
		wantOK     bool
	}{
		{"num_threads", "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 17 0", 20, 17, true},
		{"negative", "7 (x) S 1 7 7 0 -1 0", 8, 0, false},
		{"not a number", "7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 z 0", 20, 0, false},
		{"too long", "7 (x) S 123456789012345678901", 4, 0, false},
		{"missing", "7 (x) S", 4, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := StatUint([]byte(tc.line), tc.n)
			if got != tc.want || ok != tc.wantOK {
				t.Fatalf("StatUint(%q, %d) = %d, %v; want %d, %v", tc.line, tc.n, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestStatOfSelf reads this process's own line: it has a state and threads.
func TestStatOfSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if s := StatField(b, 3); len(s) != 1 {
		t.Fatalf("state %q", s)
	}
	if n, ok := StatUint(b, 20); !ok || n < 1 {
		t.Fatalf("num_threads %d, %v", n, ok)
	}
}

func TestStatFieldAllocatesNothing(t *testing.T) {
	b := []byte("7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 17 0\n")
	if a := testing.AllocsPerRun(100, func() { _, _ = StatUint(b, 20) }); a != 0 {
		t.Fatalf("%v allocations per call", a)
	}
}
