package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// fakeEnv makes the test binary, re-executed, play a child of the shim
// instead of running tests (STYLE.md §39): an OCI runtime answering
// "features", or the containerd binary answering "publish".
const fakeEnv = "LEANSHIM_SHIM_TEST_FAKE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fake(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fake is the re-executed test binary. Modes:
//
//	features      print a runtime-spec features document
//	fail          print an error and exit 1
//	record:<file> write argv and stdin to <file> (containerd publish)
func fake(mode string, args []string) int {
	switch {
	case mode == "features" && len(args) == 1 && args[0] == "features":
		fmt.Println(`{"ociVersionMin":"1.0.0","ociVersionMax":"1.1.0","hooks":["prestart"]}`)
		return 0
	case mode == "fail":
		fmt.Fprintln(os.Stderr, "fake: failing as asked")
		return 1
	case strings.HasPrefix(mode, "record:"):
		in, _ := io.ReadAll(os.Stdin)
		rec := strings.Join(args, " ") + "\n" + string(in)
		if err := os.WriteFile(strings.TrimPrefix(mode, "record:"), []byte(rec), 0o600); err != nil {
			return 3
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "fake %s: unexpected %q\n", mode, args)
	return 2
}
