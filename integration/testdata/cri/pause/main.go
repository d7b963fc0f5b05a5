// Command pause is the process of the CRI test's sandbox image, built static
// by cri_image_test.go: like Kubernetes' pause it does nothing until SIGTERM
// or SIGINT, then exits 0.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
