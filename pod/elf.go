package pod

import (
	"debug/elf"
	"encoding/binary"
)

// elfBase is where the holder's only segment is loaded.
const elfBase = 0x400000

// holderELF wraps code, a position-independent program for machine, in the
// smallest static ELF executable Linux runs: the 64-bit little-endian header,
// two program headers (one PT_LOAD of the whole file, read and execute, and
// a PT_GNU_STACK that asks for a stack without execute) and the code, which
// is the entry point. No sections, no interpreter, no libc.
func holderELF(machine elf.Machine, code []byte) []byte {
	const ehsize, phentsize, phnum = 64, 56, 2
	codeOff := ehsize + phentsize*phnum
	b := make([]byte, codeOff+len(code))
	le := binary.LittleEndian
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	b[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	b[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	b[elf.EI_OSABI] = byte(elf.ELFOSABI_NONE)
	le.PutUint16(b[16:], uint16(elf.ET_EXEC))
	le.PutUint16(b[18:], uint16(machine))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[24:], uint64(elfBase+codeOff)) // e_entry
	le.PutUint64(b[32:], ehsize)                  // e_phoff
	le.PutUint16(b[52:], ehsize)                  // e_ehsize
	le.PutUint16(b[54:], phentsize)
	le.PutUint16(b[56:], phnum)
	le.PutUint16(b[58:], 64) // e_shentsize; no sections

	load := b[ehsize:]
	le.PutUint32(load[0:], uint32(elf.PT_LOAD))
	le.PutUint32(load[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(load[16:], elfBase) // p_vaddr (p_offset 0: the whole file)
	le.PutUint64(load[24:], elfBase) // p_paddr
	le.PutUint64(load[32:], uint64(len(b)))
	le.PutUint64(load[40:], uint64(len(b)))
	le.PutUint64(load[48:], 0x1000)

	stack := b[ehsize+phentsize:]
	le.PutUint32(stack[0:], uint32(elf.PT_GNU_STACK))
	le.PutUint32(stack[4:], uint32(elf.PF_R|elf.PF_W))

	copy(b[codeOff:], code)
	return b
}
