"""The running kernel's BTF (/sys/kernel/btf/vmlinux, the BPF Type Format): struct member offsets,
so a trace probe can follow a pointer (`+OFFSET(...)`) without kernel headers. Only what offsets
need is decoded: type kinds, names, and the members of structs and unions (anonymous ones are
searched through, as C does). Format: the kernel's Documentation/bpf/btf.rst."""
from __future__ import annotations

import struct

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG = 8, 9, 10, 11, 18
KIND_VAR, KIND_DECL_TAG, KIND_ENUM64, KIND_FUNC_PROTO, KIND_DATASEC = 14, 17, 19, 13, 15
# bytes that follow a type's 12-byte header: fixed, or per vlen item
_EXTRA_FIXED = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_EXTRA_PER_ITEM = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8, KIND_DATASEC: 12, KIND_ENUM64: 12}
# qualifiers and typedefs stand for the type they name
_ALIASES = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BTFError(LookupError):
    pass


class BTF:
    """Types of one BTF blob, by id (1-based; 0 is void)."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        order = "<" if struct.unpack_from("<H", data)[0] == MAGIC else ">"
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + "HBBIIIII", data)
        if magic != MAGIC:
            raise BTFError("not BTF (bad magic)")
        self._order = order
        self._data = data
        self._strings = hdr_len + str_off
        self._str_end = self._strings + str_len
        self.types: list[tuple[int, str, int, int, int]] = [(0, "", 0, 0, 0)]  # (kind, name, vlen|flag, size/type, offset)
        self._structs: dict[str, int] = {}
        self._enums: dict[str, int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from(order + "III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            name = self._name(name_off)
            self.types.append((kind, name, info, size_or_type, pos + 12))
            if kind == KIND_STRUCT and name and name not in self._structs:
                self._structs[name] = len(self.types) - 1
            elif kind in (KIND_ENUM, KIND_ENUM64) and name and name not in self._enums:
                self._enums[name] = len(self.types) - 1
            pos += 12 + _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ITEM.get(kind, 0) * vlen

    @classmethod
    def load(cls, path: str = VMLINUX) -> "BTF":
        with open(path, "rb") as f:
            return cls(f.read())

    def _name(self, off: int) -> str:
        start = self._strings + off
        if start >= self._str_end:
            return ""
        return self._data[start:self._data.index(b"\0", start)].decode(errors="replace")

    def _resolved(self, type_id: int) -> int:
        """The type behind typedefs and qualifiers."""
        for _ in range(64):
            kind, _name, _info, size_or_type, _ = self.types[type_id]
            if kind not in _ALIASES:
                return type_id
            type_id = size_or_type
        raise BTFError(f"type {type_id}: alias chain too long")

    def members(self, type_id: int) -> list[tuple[str, int, int]]:
        """(name, type id, bit offset) of a struct's or union's members ("" for an anonymous one)."""
        kind, _name, info, _size, pos = self.types[self._resolved(type_id)]
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BTFError(f"type {type_id} is not a struct or union")
        bitfields = info >> 31  # kind_flag: the offset's top 8 bits are a bitfield's size
        out = []
        for i in range(info & 0xFFFF):
            name_off, member_type, offset = struct.unpack_from(self._order + "III", self._data, pos + 12 * i)
            out.append((self._name(name_off), member_type, offset & 0xFFFFFF if bitfields else offset))
        return out

    def struct_id(self, name: str) -> int:
        try:
            return self._structs[name]
        except KeyError:
            raise BTFError(f"this kernel's BTF has no struct {name}") from None

    def _find(self, type_id: int, member: str) -> tuple[int, int] | None:
        """(bit offset, type id) of a member, looked for in anonymous structs and unions too."""
        for name, member_type, bits in self.members(type_id):
            if name == member:
                return bits, member_type
            if not name and self.types[self._resolved(member_type)][0] in (KIND_STRUCT, KIND_UNION):
                inner = self._find(member_type, member)
                if inner:
                    return bits + inner[0], inner[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a member path ("ns.inum": members of members, not through pointers) in a
        struct. Raises BTFError naming what this kernel lacks, or a bitfield's unaligned offset."""
        type_id, bits = self.struct_id(struct_name), 0
        for part in path.split("."):
            found = self._find(type_id, part)
            if found is None:
                raise BTFError(f"struct {struct_name} has no member {path} in this kernel's BTF")
            bits += found[0]
            type_id = found[1]
        if bits % 8:
            raise BTFError(f"{struct_name}.{path} is a bitfield")
        return bits // 8

    def enum(self, name: str) -> dict[str, int]:
        """An enum's names -> values (an enum moves between kernels: the drop reasons do)."""
        try:
            kind, _name, info, _size, pos = self.types[self._enums[name]]
        except KeyError:
            raise BTFError(f"this kernel's BTF has no enum {name}") from None
        out = {}
        for i in range(info & 0xFFFF):
            if kind == KIND_ENUM:
                name_off, value = struct.unpack_from(self._order + "Ii", self._data, pos + 8 * i)
            else:
                name_off, lo, hi = struct.unpack_from(self._order + "III", self._data, pos + 12 * i)
                value = hi << 32 | lo
            out[self._name(name_off)] = value
        return out
