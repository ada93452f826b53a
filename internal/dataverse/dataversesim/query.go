package dataversesim

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ---- $filter ----

type cond interface{ match(row map[string]any) bool }

type andCond []cond
type orCond []cond
type notCond struct{ c cond }

func (a andCond) match(r map[string]any) bool {
	for _, c := range a {
		if !c.match(r) {
			return false
		}
	}
	return true
}

func (o orCond) match(r map[string]any) bool {
	for _, c := range o {
		if c.match(r) {
			return true
		}
	}
	return false
}

func (n notCond) match(r map[string]any) bool { return !n.c.match(r) }

type cmpCond struct {
	col string
	op  string // eq ne gt ge lt le contains startswith endswith
	lit any    // typed: nil, string, float64, bool, time.Time
}

func (c cmpCond) match(r map[string]any) bool {
	v := r[c.col]
	switch x := v.(type) {
	case Ref:
		v = x.ID
	case OptionValue:
		v = float64(x)
	case Money:
		v = float64(x)
	case int64:
		v = float64(x)
	}
	switch c.op {
	case "contains", "startswith", "endswith":
		s, ok := v.(string)
		l, _ := c.lit.(string)
		if !ok {
			return false
		}
		s, l = strings.ToLower(s), strings.ToLower(l)
		switch c.op {
		case "contains":
			return strings.Contains(s, l)
		case "startswith":
			return strings.HasPrefix(s, l)
		}
		return strings.HasSuffix(s, l)
	}
	if c.lit == nil || v == nil {
		eq := c.lit == nil && v == nil
		switch c.op {
		case "eq":
			return eq
		case "ne":
			return !eq
		}
		return false
	}
	n := cmpValues(v, c.lit)
	switch c.op {
	case "eq":
		return n == 0
	case "ne":
		return n != 0
	case "gt":
		return n > 0
	case "ge":
		return n >= 0
	case "lt":
		return n < 0
	case "le":
		return n <= 0
	}
	return false
}

// cmpValues orders two stored or literal values; nil sorts first.
func cmpValues(a, b any) int {
	norm := func(v any) any {
		switch x := v.(type) {
		case Ref:
			return x.ID
		case OptionValue:
			return float64(x)
		case Money:
			return float64(x)
		case int64:
			return float64(x)
		case []OptionValue:
			return fmt.Sprint(x)
		}
		return v
	}
	a, b = norm(a), norm(b)
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	switch x := a.(type) {
	case string:
		y, _ := b.(string)
		return strings.Compare(strings.ToLower(x), strings.ToLower(y))
	case float64:
		y, _ := b.(float64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case bool:
		y, _ := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case time.Time:
		y, _ := b.(time.Time)
		return x.Compare(y)
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

type token struct {
	text   string
	quoted bool
}

func tokenize(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{text: string(c)})
			i++
		case c == '\'':
			var b strings.Builder
			i++
			for {
				if i >= len(s) {
					return nil, fmt.Errorf("unterminated string literal in $filter")
				}
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			out = append(out, token{text: b.String(), quoted: true})
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n(),'", rune(s[j])) {
				j++
			}
			out = append(out, token{text: s[i:j]})
			i = j
		}
	}
	return out, nil
}

type filterParser struct {
	s    *Server
	m    *entityMeta
	toks []token
	pos  int
}

func (p *filterParser) peek() (token, bool) {
	if p.pos < len(p.toks) {
		return p.toks[p.pos], true
	}
	return token{}, false
}

func (p *filterParser) next() (token, error) {
	t, ok := p.peek()
	if !ok {
		return t, fmt.Errorf("unexpected end of $filter")
	}
	p.pos++
	return t, nil
}

func (p *filterParser) keyword(w string) bool {
	t, ok := p.peek()
	if ok && !t.quoted && strings.EqualFold(t.text, w) {
		p.pos++
		return true
	}
	return false
}

func (p *filterParser) expect(w string) error {
	t, err := p.next()
	if err != nil {
		return err
	}
	if t.quoted || t.text != w {
		return fmt.Errorf("expected %q in $filter, found %q", w, t.text)
	}
	return nil
}

func (p *filterParser) parseOr() (cond, error) {
	c, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	or := orCond{c}
	for p.keyword("or") {
		c, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		or = append(or, c)
	}
	if len(or) == 1 {
		return c, nil
	}
	return or, nil
}

func (p *filterParser) parseAnd() (cond, error) {
	c, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	and := andCond{c}
	for p.keyword("and") {
		c, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		and = append(and, c)
	}
	if len(and) == 1 {
		return c, nil
	}
	return and, nil
}

func (p *filterParser) parseUnary() (cond, error) {
	if p.keyword("not") {
		c, err := p.parseUnary()
		return notCond{c}, err
	}
	t, err := p.next()
	if err != nil {
		return nil, err
	}
	if !t.quoted && t.text == "(" {
		c, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		return c, p.expect(")")
	}
	if fn := strings.ToLower(t.text); !t.quoted && (fn == "contains" || fn == "startswith" || fn == "endswith") {
		if err := p.expect("("); err != nil {
			return nil, err
		}
		f, err := p.next()
		if err != nil {
			return nil, err
		}
		col, kind, err := p.s.queryColumn(p.m, f.text)
		if err != nil {
			return nil, err
		}
		if err := p.expect(","); err != nil {
			return nil, err
		}
		l, err := p.next()
		if err != nil {
			return nil, err
		}
		if !l.quoted || (kind != kString && kind != -1) {
			return nil, fmt.Errorf("%s needs a text column and a quoted value", fn)
		}
		return cmpCond{col: col, op: fn, lit: l.text}, p.expect(")")
	}
	col, kind, err := p.s.queryColumn(p.m, t.text)
	if err != nil {
		return nil, err
	}
	opTok, err := p.next()
	if err != nil {
		return nil, err
	}
	op := strings.ToLower(opTok.text)
	switch op {
	case "eq", "ne", "gt", "ge", "lt", "le":
	default:
		return nil, fmt.Errorf("unsupported operator %q in $filter", opTok.text)
	}
	l, err := p.next()
	if err != nil {
		return nil, err
	}
	lit, err := literal(kind, l)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.text, err)
	}
	return cmpCond{col: col, op: op, lit: lit}, nil
}

// literal converts a $filter literal to the typed form of the column.
func literal(kind colKind, t token) (any, error) {
	if !t.quoted && t.text == "null" {
		return nil, nil
	}
	switch kind {
	case kString:
		if !t.quoted {
			return nil, fmt.Errorf("text values must be quoted, found %s", t.text)
		}
		return t.text, nil
	case kGUID, kLookup:
		if !isGUID(t.text) {
			return nil, fmt.Errorf("%q is not a GUID", t.text)
		}
		return normID(t.text), nil
	case kDate:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
			if tm, err := time.Parse(layout, t.text); err == nil {
				return tm.UTC(), nil
			}
		}
		return nil, fmt.Errorf("%q is not a date", t.text)
	case kBool:
		b, err := strconv.ParseBool(t.text)
		if err != nil || t.quoted {
			return nil, fmt.Errorf("%q is not a boolean", t.text)
		}
		return b, nil
	case kInt, kDecimal, kMoney, kOption:
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil || t.quoted {
			return nil, fmt.Errorf("%q is not a number", t.text)
		}
		return f, nil
	}
	// Unknown (custom) column: infer from the literal.
	if t.quoted {
		return t.text, nil
	}
	if b, err := strconv.ParseBool(t.text); err == nil {
		return b, nil
	}
	if f, err := strconv.ParseFloat(t.text, 64); err == nil {
		return f, nil
	}
	return t.text, nil
}

// queryColumn resolves a column named in $select/$filter/$orderby: lookups
// are addressed as _x_value. kind -1 means a custom column.
func (s *Server) queryColumn(m *entityMeta, name string) (string, colKind, error) {
	if strings.HasPrefix(name, "_") && strings.HasSuffix(name, "_value") {
		col := strings.TrimSuffix(strings.TrimPrefix(name, "_"), "_value")
		if c, ok := m.cols[col]; ok && c.kind == kLookup {
			return col, kLookup, nil
		}
	} else if c, ok := m.cols[name]; ok && c.kind != kLookup {
		return name, c.kind, nil
	} else if !ok && (s.extra[m.logical][name] || isCustomColumn(name)) {
		return name, -1, nil
	}
	//lint:ignore ST1005 Dataverse's own wording, which clients receive as the error message
	return "", 0, fmt.Errorf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", name, m.logical)
}

// isCustomColumn reports whether a name looks like a publisher-prefixed
// custom column (msi_priority): the simulator accepts those on every table,
// as if the solution defining them were installed.
func isCustomColumn(name string) bool {
	i := strings.IndexByte(name, '_')
	return i > 0 && i < len(name)-1 && !strings.HasPrefix(name, "_")
}

// ---- request preferences ----

type prefs struct {
	maxPageSize    int
	annotations    []string // nil: none
	representation bool
	continueOnErr  bool
	trackChanges   bool
}

func parsePrefer(h http.Header) prefs {
	var p prefs
	for _, line := range h.Values("Prefer") {
		rest := line
		for rest != "" {
			var part string
			// split on commas outside quotes
			inQ := false
			i := 0
			for ; i < len(rest); i++ {
				if rest[i] == '"' {
					inQ = !inQ
				}
				if rest[i] == ',' && !inQ {
					break
				}
			}
			part, rest = strings.TrimSpace(rest[:i]), rest[min(i+1, len(rest)):]
			k, v, _ := strings.Cut(part, "=")
			k, v = strings.TrimSpace(strings.ToLower(k)), strings.Trim(strings.TrimSpace(v), `"`)
			switch k {
			case "odata.maxpagesize":
				p.maxPageSize, _ = strconv.Atoi(v)
			case "odata.include-annotations":
				for _, a := range strings.Split(v, ",") {
					p.annotations = append(p.annotations, strings.TrimSpace(a))
				}
			case "return":
				p.representation = v == "representation"
			case "odata.continue-on-error":
				p.continueOnErr = true
			case "odata.track-changes":
				p.trackChanges = true
			}
		}
	}
	return p
}

func (p prefs) wants(annotation string) bool {
	for _, a := range p.annotations {
		if a == "*" || a == annotation || (strings.HasSuffix(a, ".*") && strings.HasPrefix(annotation, strings.TrimSuffix(a, "*"))) {
			return true
		}
	}
	return false
}

const (
	annFormatted = "OData.Community.Display.V1.FormattedValue"
	annLogical   = "Microsoft.Dynamics.CRM.lookuplogicalname"
	annNav       = "Microsoft.Dynamics.CRM.associatednavigationproperty"
)
