package pod

import "encoding/binary"

// elfBase is where the holder's only segment is loaded.
const elfBase = 0x400000

// ELF numbers (elf.h) for the header below. Not debug/elf's: that package
// brings debug/dwarf and compress/zlib into the shim, their code and their
// package initialisation's heap, for a dozen constants.
const (
	elfClass64    = 2 // EI_CLASS: ELFCLASS64
	elfData2LSB   = 1 // EI_DATA: ELFDATA2LSB
	elfEVCurrent  = 1 // EV_CURRENT
	elfETExec     = 2 // ET_EXEC
	elfPTLoad     = 1
	elfPTGNUStack = 0x6474e551
	elfPFX        = 1
	elfPFW        = 2
	elfPFR        = 4
	elfEMNone     = 0  // EM_NONE
	elfEMX86_64   = 62 // EM_X86_64
)

// holderELF wraps code, a position-independent program for machine, in the
// smallest static ELF executable Linux runs: the 64-bit little-endian header,
// two program headers (one PT_LOAD of the whole file, read and execute, and
// a PT_GNU_STACK that asks for a stack without execute) and the code, which
// is the entry point. No sections, no interpreter, no libc.
func holderELF(machine uint16, code []byte) []byte {
	const ehsize, phentsize, phnum = 64, 56, 2
	codeOff := ehsize + phentsize*phnum
	b := make([]byte, codeOff+len(code))
	le := binary.LittleEndian
	copy(b, "\x7fELF")
	b[4] = elfClass64
	b[5] = elfData2LSB
	b[6] = elfEVCurrent // EI_VERSION; EI_OSABI (7) stays 0, System V
	le.PutUint16(b[16:], elfETExec)
	le.PutUint16(b[18:], machine)
	le.PutUint32(b[20:], elfEVCurrent)
	le.PutUint64(b[24:], uint64(elfBase+codeOff)) // e_entry
	le.PutUint64(b[32:], ehsize)                  // e_phoff
	le.PutUint16(b[52:], ehsize)                  // e_ehsize
	le.PutUint16(b[54:], phentsize)
	le.PutUint16(b[56:], phnum)
	le.PutUint16(b[58:], 64) // e_shentsize; no sections

	load := b[ehsize:]
	le.PutUint32(load[0:], elfPTLoad)
	le.PutUint32(load[4:], elfPFR|elfPFX)
	le.PutUint64(load[16:], elfBase) // p_vaddr (p_offset 0: the whole file)
	le.PutUint64(load[24:], elfBase) // p_paddr
	le.PutUint64(load[32:], uint64(len(b)))
	le.PutUint64(load[40:], uint64(len(b)))
	le.PutUint64(load[48:], 0x1000)

	stack := b[ehsize+phentsize:]
	le.PutUint32(stack[0:], elfPTGNUStack)
	le.PutUint32(stack[4:], elfPFR|elfPFW)

	copy(b[codeOff:], code)
	return b
}
