package servicebus

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// adapterProps are the application properties Service Bus or this adapter
// add on their own; the port's callers never see them.
var adapterProps = map[string]bool{
	sbPropDeadLetterReason:      true,
	sbPropDeadLetterDescription: true,
	propFirstFailedAt:           true,
	propLastFailedAt:            true,
	propDeadAt:                  true,
}

// stringProperties turns Service Bus application properties into the port's
// strings. Messages from other producers (Dataverse's native Service Bus
// integration sends Claims properties of several AMQP types) come through
// with every value as text; nil when nothing is left.
func stringProperties(in map[string]any) map[string]string {
	var out map[string]string
	for k, v := range in {
		if adapterProps[k] {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(in))
		}
		out[k] = propString(v)
	}
	return out
}

// propString renders one AMQP application-property value as text.
func propString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return base64.StdEncoding.EncodeToString(x)
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.FormatInt(int64(x), 10)
	case int8:
		return strconv.FormatInt(int64(x), 10)
	case int16:
		return strconv.FormatInt(int64(x), 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint:
		return strconv.FormatUint(uint64(x), 10)
	case uint8:
		return strconv.FormatUint(uint64(x), 10)
	case uint16:
		return strconv.FormatUint(uint64(x), 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case fmt.Stringer: // amqp.UUID, amqp.Symbol-like named types with String
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// propInt reads an integer property written by msisync (0 when absent or not a number).
func propInt(props map[string]any, key string) int {
	switch x := props[key].(type) {
	case string:
		n, _ := strconv.Atoi(x)
		return n
	case int:
		return x
	case int32:
		return int(x)
	case int64:
		return int(x)
	}
	return 0
}

// propTime reads a time property (RFC 3339 text or an AMQP timestamp).
func propTime(props map[string]any, key string) (time.Time, bool) {
	switch x := props[key].(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		return t, err == nil
	case time.Time:
		return x, true
	}
	return time.Time{}, false
}
