package task

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The bugs FuzzTaskService has found that are not fixed yet, each matched as
// narrowly as it can be so that the fuzzer goes on looking for new ones.
// TODO(issue 6): drop each one once its bug is fixed, and the target checks
// that case again.

// fuzzKnownUnclassified matches the errors that reach the wire as Unknown
// although the request is at fault.
func fuzzKnownUnclassified(m fuzzMethod, msg string) bool {
	switch m.name {
	case "Create":
		// stdio.Open's refusal of a stream (a missing FIFO, a malformed
		// file:// URI), wrapped without a class by process.NewInit.
		return strings.HasPrefix(msg, "open stdio: ")
	case "Kill":
		// kill(2)'s EINVAL for a signal out of range, from process.Exec.Kill.
		return strings.HasPrefix(msg, "kill exec ") && strings.HasSuffix(msg, ": invalid argument")
	case "Checkpoint":
		// A NUL in a path the shim passes to the runtime as an argument:
		// os/exec refuses the command line with EINVAL.
		return strings.Contains(msg, ": fork/exec ") && strings.Contains(msg, ": invalid argument")
	}
	return false
}

// fuzzValidUTF8, in the sandbox's interceptor, works around a bug: toStatus puts the error's text
// in the status as it is, and the text can hold request bytes that are not
// UTF-8 (a bundle path in an os.PathError). ttrpc v1.1.2 then fails to
// marshal the response and closes the connection (server.go, "failed
// marshaling response"), so every later call fails. The class is kept, so
// fuzzErrorOK still judges it.
func fuzzValidUTF8(err error) error {
	st, ok := status.FromError(err)
	if !ok || utf8.ValidString(st.Message()) {
		return err
	}
	return status.Error(st.Code(), strings.ToValidUTF8(st.Message(), "\uFFFD"))
}

// fuzzStuckExec matches a bug that teardown meets: an exec whose Start failed after it
// opened its stdio (the runtime's exec failed) keeps its stdio set and stays
// created, and Delete refuses it for good, as if a Start were still running
// (process.Exec.Start and Exec.Delete). The container's Delete still works.
func fuzzStuckExec(err error) bool {
	st, _ := status.FromError(err)
	return st.Code() == codes.FailedPrecondition && strings.HasPrefix(st.Message(), "cannot delete a created exec")
}
