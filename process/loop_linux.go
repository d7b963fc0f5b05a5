package process

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// loopAttempts bounds the retries when another program takes the free loop
// device between LOOP_CTL_GET_FREE and our LOOP_CONFIGURE.
const loopAttempts = 64

// attachLoop attaches file to a free loop device (loop(4)) and returns the
// device, open; the caller mounts it and then closes it. The device is set
// up with LO_FLAGS_AUTOCLEAR, so the kernel detaches it once nothing holds
// it: after the caller's close, that is when the mount goes, and at once if
// the mount failed. Nothing needs a loop device cleaned up by hand, not even
// after the shim dies. readonly is the mount's "ro"; directIO its
// "direct-io" option.
func attachLoop(file string, readonly, directIO bool) (_ *os.File, retErr error) {
	mode := os.O_RDWR
	if readonly {
		mode = os.O_RDONLY
	}
	back, err := os.OpenFile(file, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop backing file: %w", err)
	}
	defer func() { _ = back.Close() }() // the loop device holds its own reference
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop control: %w", err)
	}
	defer func() { _ = ctl.Close() }() // nothing to flush
	var cfg unix.LoopConfig
	cfg.Fd = uint32(back.Fd())
	copy(cfg.Info.File_name[:], file)
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if readonly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if directIO {
		cfg.Info.Flags |= unix.LO_FLAGS_DIRECT_IO
	}
	for range loopAttempts {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("get a free loop device: %w", err)
		}
		dev, err := os.OpenFile(fmt.Sprintf("/dev/loop%d", n), mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open loop device: %w", err)
		}
		// LOOP_CONFIGURE (Linux 5.8) sets the file and the flags in one
		// step, so no half-configured device is ever visible.
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		_ = dev.Close() // not ours
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("configure %s with %s: %w", dev.Name(), file, err)
		}
		// EBUSY: another program attached it first (losetup(8) retries too).
	}
	return nil, fmt.Errorf("attach %s: every free loop device was taken first, %d times", file, loopAttempts)
}
