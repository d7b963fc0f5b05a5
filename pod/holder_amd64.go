package pod

// holderMachine is the ELF machine of holderCode.
const holderMachine = elfEMX86_64

// holderCode is the whole holder program for x86-64 Linux, position
// independent, entered with the kernel's initial stack. It blocks SIGINT,
// SIGTERM and SIGCHLD, then names itself, and takes them one at a time with
// rt_sigtimedwait(2): SIGCHLD reaps every exited child (as PID 1 of a pod's
// PID namespace it inherits the pod's orphans), SIGINT or SIGTERM exits 0.
// Blocked signals are queued even for a PID namespace's init, which the
// kernel otherwise spares every signal it has no handler for. Assembled
// with GNU as 2.40 (Intel syntax) and checked against objdump -d: the
// encoding on the left, each instruction in the comment beside it.
var holderCode = []byte{
	// rt_sigprocmask(SIG_BLOCK, &set, NULL, 8), set on the stack
	0x68, 0x02, 0x40, 0x01, 0x00, //       push   0x14002           SIGINT|SIGTERM|SIGCHLD
	0x48, 0x89, 0xe3, //                   mov    rbx, rsp          rbx = &set, kept
	0x31, 0xff, //                         xor    edi, edi          SIG_BLOCK
	0x48, 0x89, 0xde, //                   mov    rsi, rbx
	0x31, 0xd2, //                         xor    edx, edx
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov    r10d, 8           sizeof(sigset_t)
	0xb8, 0x0e, 0x00, 0x00, 0x00, //       mov    eax, 14           rt_sigprocmask
	0x0f, 0x05, //                         syscall
	// prctl(PR_SET_NAME, name): from here on the holder is named, and
	// its signals are blocked (what a caller may wait for)
	0xbf, 0x0f, 0x00, 0x00, 0x00, //       mov    edi, 15           PR_SET_NAME
	0x48, 0x8d, 0x35, 0x51, 0x00, 0x00, 0x00, // lea rsi, [rip+name] (name at 121, next instruction at 40)
	0xb8, 0x9d, 0x00, 0x00, 0x00, //       mov    eax, 157          prctl
	0x0f, 0x05, //                         syscall
	// wait: sig = rt_sigtimedwait(&set, NULL, NULL, 8)
	0x48, 0x89, 0xdf, //                   mov    rdi, rbx
	0x31, 0xf6, //                         xor    esi, esi
	0x31, 0xd2, //                         xor    edx, edx
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov    r10d, 8
	0xb8, 0x80, 0x00, 0x00, 0x00, //       mov    eax, 128          rt_sigtimedwait
	0x0f, 0x05, //                         syscall
	0x83, 0xf8, 0x11, //                   cmp    eax, 17           SIGCHLD?
	0x75, 0x1e, //                         jne    other
	// reap: while wait4(-1, NULL, WNOHANG|__WALL, NULL) > 0
	0x48, 0xc7, 0xc7, 0xff, 0xff, 0xff, 0xff, // mov rdi, -1
	0x31, 0xf6, //                         xor    esi, esi
	0xba, 0x01, 0x00, 0x00, 0x40, //       mov    edx, 0x40000001   WNOHANG|__WALL
	0x45, 0x31, 0xd2, //                   xor    r10d, r10d
	0xb8, 0x3d, 0x00, 0x00, 0x00, //       mov    eax, 61           wait4
	0x0f, 0x05, //                         syscall
	0x85, 0xc0, //                         test   eax, eax
	0x7f, 0xe4, //                         jg     reap
	0xeb, 0xc9, //                         jmp    wait
	// other: SIGTERM or SIGINT exits, anything else (EINTR) waits again
	0x83, 0xf8, 0x0f, //                   cmp    eax, 15           SIGTERM?
	0x74, 0x05, //                         je     quit
	0x83, 0xf8, 0x02, //                   cmp    eax, 2            SIGINT?
	0x75, 0xbf, //                         jne    wait
	// quit: exit_group(0)
	0x31, 0xff, //                         xor    edi, edi
	0xb8, 0xe7, 0x00, 0x00, 0x00, //       mov    eax, 231          exit_group
	0x0f, 0x05, //                         syscall
	// name: "leanshim-pod\0"
	'l', 'e', 'a', 'n', 's', 'h', 'i', 'm', '-', 'p', 'o', 'd', 0,
}
