package remotecontext

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
	"unsafe"
)

// The direct path (direct.go) reads a RemoteExecutionContext without building
// a generic tree: one validating pass writes a flat tape of nodes (a span of
// the body per value, no allocation), and the interpreter then looks up only
// what the event needs. Like fastDecode, the tape declines whatever it cannot
// read exactly as encoding/json does (invalid UTF-8, surrogate escapes,
// escaped or repeated keys below the top level, deep nesting, malformed
// JSON); parse then takes the tree path, which words the error.

type nodeKind uint8

const (
	kObject nodeKind = iota + 1
	kArray
	kString
	kNumber
	kTrue
	kFalse
	kNull
)

// node is one JSON value on the tape. An object's members follow it as
// key node, value subtree, key node, …; an array's elements follow it.
type node struct {
	kind  nodeKind
	esc   bool  // string with escapes
	start int32 // string: first byte inside the quotes; number: first digit
	end   int32 // string: the closing quote; number: one past the last digit
	n     int32 // object: members; array: elements
	next  int32 // tape index just past this subtree
}

type tape struct {
	b     []byte
	i     int
	depth int
	nodes []node
	// dupKey is a top-level key seen twice (the one case refused outright);
	// dup says there is one, as the key itself may be "".
	dupKey string
	dup    bool
	// keys of the objects being read: a fingerprint (length and first
	// bytes) to compare cheaply, and the key's node
	keyFP  []uint64
	keyIdx []int32
}

// fingerprint packs a key's length and first seven bytes.
func fingerprint(k []byte) uint64 {
	fp := uint64(len(k)) << 56
	for i := 0; i < len(k) && i < 7; i++ {
		fp |= uint64(k[i]) << (8 * i)
	}
	return fp
}

// maxTapeBody bounds what the tape indexes (int32 offsets); webhook bodies
// are limited far below this by the receiver.
const maxTapeBody = 1 << 30

// build indexes body; false when the tree path must handle it.
func (t *tape) build(body []byte) bool {
	if len(body) > maxTapeBody {
		return false
	}
	t.b, t.i, t.depth, t.nodes, t.dupKey, t.dup = body, 0, 0, t.nodes[:0], "", false
	t.keyFP, t.keyIdx = t.keyFP[:0], t.keyIdx[:0]
	t.ws()
	if !t.value() {
		return false
	}
	t.ws()
	return t.i == len(t.b)
}

// ws skips whitespace; the test inlines, so compact JSON (nothing to skip)
// costs no call.
func (t *tape) ws() {
	if t.i < len(t.b) && t.b[t.i] <= ' ' {
		t.skipWS()
	}
}

func (t *tape) skipWS() {
	b, i := t.b, t.i
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			t.i = i
			return
		}
	}
	t.i = i
}

// push appends a node: a leaf (start, end, next = the following index) or,
// for an object or array (start = end = 0), one whose n and next are set
// when it closes.
// Fields are written in place: appending a node value cost a copy through
// the stack for each of the ~450 nodes of a 7.8 KB body.
func (t *tape) push(kind nodeKind, esc bool, start, end int) int {
	i := len(t.nodes)
	if i == cap(t.nodes) {
		t.nodes = append(t.nodes, node{})
	} else {
		t.nodes = t.nodes[:i+1]
	}
	p := &t.nodes[i]
	p.kind, p.esc, p.start, p.end, p.n, p.next = kind, esc, int32(start), int32(end), 0, int32(i+1)
	return i
}

func (t *tape) value() bool {
	if t.i >= len(t.b) {
		return false
	}
	switch c := t.b[t.i]; {
	case c == '{':
		return t.object()
	case c == '[':
		return t.array()
	case c == '"':
		return t.str()
	case c == 't':
		return t.lit("true", kTrue)
	case c == 'f':
		return t.lit("false", kFalse)
	case c == 'n':
		return t.lit("null", kNull)
	case c == '-' || c >= '0' && c <= '9':
		return t.number()
	}
	return false
}

func (t *tape) lit(want string, k nodeKind) bool {
	if len(t.b)-t.i < len(want) || string(t.b[t.i:t.i+len(want)]) != want {
		return false
	}
	t.push(k, false, t.i, t.i+len(want))
	t.i += len(want)
	return true
}

func (t *tape) number() bool {
	end, ok := numberEnd(t.b, t.i)
	if !ok {
		return false
	}
	start := t.i
	t.i = end
	t.push(kNumber, false, start, end)
	return true
}

// plainASCII marks the bytes a string may hold as they are: printable
// ASCII except '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainRun returns the index of the first byte at or after i that is not
// plain printable ASCII (or len(b)). Eight bytes are tested at once: a byte
// is flagged when it is ≥ 0x80, < 0x20, '"' or '\\' (the classic "has a
// zero byte" bit trick; the lowest flagged byte is always a true one, as a
// borrow only runs upward from a byte that is itself flagged).
func plainRun(b []byte, i int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for i+8 <= len(b) {
		w := binary.LittleEndian.Uint64(b[i:])
		q := w ^ (lo * '"')
		bs := w ^ (lo * '\\')
		stop := (w | (q-lo)&^q | (bs-lo)&^bs | (w-lo*0x20)&^w) & hi
		if stop != 0 {
			return i + bits.TrailingZeros64(stop)/8
		}
		i += 8
	}
	for i < len(b) && plainASCII[b[i]] {
		i++
	}
	return i
}

// str validates a string at t.i (which is '"') and records its span.
func (t *tape) str() bool {
	b := t.b
	start := t.i + 1
	ascii, esc := true, false
	i := start
	for i < len(b) {
		// Plain printable ASCII is the bulk: skip it eight bytes at a time.
		i = plainRun(b, i)
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:i]) {
				return false // encoding/json substitutes U+FFFD: let it
			}
			t.push(kString, esc, start, i)
			t.i = i + 1
			return true
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return false
				}
				r, ok := hex4(b[i+2 : i+6])
				if !ok || r >= 0xd800 && r < 0xe000 {
					return false
				}
				i += 6
			default:
				return false
			}
		case c < 0x20:
			return false
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			i++
		}
	}
	return false
}

func (t *tape) object() bool {
	t.i++ // {
	if t.depth++; t.depth > fastMaxDepth {
		return false
	}
	self := t.push(kObject, false, 0, 0)
	t.ws()
	members := 0
	base := len(t.keyFP)
	if t.i < len(t.b) && t.b[t.i] == '}' {
		t.i++
	} else {
		for {
			if t.i >= len(t.b) || t.b[t.i] != '"' || !t.str() {
				return false
			}
			key := len(t.nodes) - 1
			if t.nodes[key].esc {
				return false // "a" and "\u0061" are the same key: let encoding/json decide
			}
			// Repeated keys: compare with the earlier keys of this object.
			kb := t.text(key)
			fp := fingerprint(kb)
			for j, other := range t.keyFP[base:] {
				if other == fp && bytes.Equal(t.text(int(t.keyIdx[base+j])), kb) {
					if t.depth != 1 {
						return false // encoding/json keeps the last: the tree path mirrors it
					}
					if !t.dup {
						t.dupKey, t.dup = string(kb), true
					}
				}
			}
			t.keyFP = append(t.keyFP, fp)
			t.keyIdx = append(t.keyIdx, int32(key))
			t.ws()
			if t.i >= len(t.b) || t.b[t.i] != ':' {
				return false
			}
			t.i++
			t.ws()
			if !t.value() {
				return false
			}
			members++
			if members > maxUniqueCheck*4 {
				return false // quadratic key check: no real payload comes near
			}
			t.ws()
			if t.i >= len(t.b) {
				return false
			}
			if t.b[t.i] == ',' {
				t.i++
				t.ws()
				continue
			}
			if t.b[t.i] != '}' {
				return false
			}
			t.i++
			break
		}
	}
	t.depth--
	t.keyFP, t.keyIdx = t.keyFP[:base], t.keyIdx[:base]
	t.nodes[self].n = int32(members)
	t.nodes[self].next = int32(len(t.nodes))
	return true
}

func (t *tape) array() bool {
	t.i++ // [
	if t.depth++; t.depth > fastMaxDepth {
		return false
	}
	self := t.push(kArray, false, 0, 0)
	t.ws()
	elems := 0
	if t.i < len(t.b) && t.b[t.i] == ']' {
		t.i++
	} else {
		for {
			if !t.value() {
				return false
			}
			elems++
			t.ws()
			if t.i >= len(t.b) {
				return false
			}
			if t.b[t.i] == ',' {
				t.i++
				t.ws()
				continue
			}
			if t.b[t.i] != ']' {
				return false
			}
			t.i++
			break
		}
	}
	t.depth--
	t.nodes[self].n = int32(elems)
	t.nodes[self].next = int32(len(t.nodes))
	return true
}

// text is the raw text of a string (inside the quotes) or number node.
func (t *tape) text(i int) []byte {
	n := &t.nodes[i]
	return t.b[n.start:n.end]
}

// lookup returns the value node of key in object o, -1 when absent. Keys
// below the top level are unique (build declines otherwise).
func (t *tape) lookup(o int, key string) int {
	if o < 0 || t.nodes[o].kind != kObject {
		return -1
	}
	for k := o + 1; k < int(t.nodes[o].next); k = int(t.nodes[k+1].next) {
		if string(t.text(k)) == key {
			return k + 1
		}
	}
	return -1
}

// kind is the kind of node i, 0 for -1 (absent).
func (t *tape) kind(i int) nodeKind {
	if i < 0 {
		return 0
	}
	return t.nodes[i].kind
}

// isStr reports whether node i is a string equal to s (escapes resolved).
func (t *tape) isStr(i int, s string) bool {
	if t.kind(i) != kString {
		return false
	}
	if !t.nodes[i].esc {
		return string(t.text(i)) == s
	}
	var buf [128]byte
	u := unescapeTo(buf[:0], t.text(i))
	return string(u) == s
}

// unescapeTo appends the decoded content of a validated string.
func unescapeTo(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := bytes.IndexByte(raw[i:], '\\')
			if j < 0 {
				return append(dst, raw[i:]...)
			}
			dst = append(dst, raw[i:i+j]...)
			i += j
			continue
		}
		switch e := raw[i+1]; e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(raw[i+2 : i+6])
			dst = utf8.AppendRune(dst, r)
			i += 6
			continue
		default: // " \ /
			dst = append(dst, e)
		}
		i += 2
	}
	return dst
}

// arena holds every string an event keeps, copied out of the body (which the
// caller may reuse) into a few shared blocks instead of one allocation per
// string. Blocks are only appended to, never moved, so the strings handed out
// stay valid and immutable.
type arena struct{ buf []byte }

func (a *arena) reserve(n int) {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(n, 2048))
	}
}

// finish turns the bytes appended since start into a string.
func (a *arena) finish(start int) string {
	if len(a.buf) == start {
		return ""
	}
	return unsafe.String(&a.buf[start], len(a.buf)-start)
}

// str copies the decoded text of string node i.
func (a *arena) str(t *tape, i int) string {
	raw := t.text(i)
	a.reserve(len(raw))
	start := len(a.buf)
	if t.nodes[i].esc {
		a.buf = unescapeTo(a.buf, raw)
	} else {
		a.buf = append(a.buf, raw...)
	}
	return a.finish(start)
}

// bytes copies b.
func (a *arena) bytes(b []byte) string {
	a.reserve(len(b))
	start := len(a.buf)
	a.buf = append(a.buf, b...)
	return a.finish(start)
}

// lower returns s in lower case, copying only when it has upper-case ASCII
// (the strings it is given are ids and logical names).
func (a *arena) lower(s string) string {
	upper := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			upper = true
			break
		} else if c >= utf8.RuneSelf {
			return lowerUnicode(s)
		}
	}
	if !upper {
		return s
	}
	a.reserve(len(s))
	start := len(a.buf)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		a.buf = append(a.buf, c)
	}
	return a.finish(start)
}
