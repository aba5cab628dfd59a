// The oracle of tests/test_clickhouse.py for otel_rai/clickhouse/values.py: attribute values turned into text
// the way the collector's ClickHouse exporter turns them (pdata's Value.AsString), with Go's own strconv and
// encoding/json doing the work.
//
// Input, one JSON object a line: {"t": "str"|"bool"|"int"|"double"|"null"|"array", "v": ...}, an int as a
// decimal string, a double as Python's float.hex() text, an array as a list of such objects.
// Output, one JSON object a line: {"s": the text}.
package main

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"strconv"
)

type value struct {
	T string          `json:"t"`
	V json.RawMessage `json:"v"`
}

// raw is the value as pdata's AsRaw gives it to encoding/json.
func raw(v value) any {
	switch v.T {
	case "str":
		var s string
		must(json.Unmarshal(v.V, &s))
		return s
	case "bool":
		var b bool
		must(json.Unmarshal(v.V, &b))
		return b
	case "int":
		var s string
		must(json.Unmarshal(v.V, &s))
		n, err := strconv.ParseInt(s, 10, 64)
		must(err)
		return n
	case "double":
		var s string
		must(json.Unmarshal(v.V, &s))
		f, err := strconv.ParseFloat(s, 64)
		must(err)
		return f
	case "array":
		var items []value
		must(json.Unmarshal(v.V, &items))
		out := make([]any, 0, len(items))
		for _, item := range items {
			out = append(out, raw(item))
		}
		return out
	}
	return nil
}

// double is a double as text, by the rule pdata states: JavaScript's number notation (fixed from 1e-6 up
// to 1e21, otherwise exponent notation without zero padding), and an error text for NaN and infinities.
func double(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "json: unsupported value: " + strconv.FormatFloat(f, 'g', -1, 64)
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	text := strconv.FormatFloat(f, format, -1, 64)
	if format == 'e' {
		n := len(text)
		if n >= 4 && text[n-4] == 'e' && text[n-3] == '-' && text[n-2] == '0' {
			text = text[:n-2] + text[n-1:]
		}
	}
	return text
}

func asString(v value) string {
	switch r := raw(v).(type) {
	case nil:
		return ""
	case string:
		return r
	case bool:
		return strconv.FormatBool(r)
	case int64:
		return strconv.FormatInt(r, 10)
	case float64:
		return double(r)
	case []any:
		text, _ := json.Marshal(r) // a NaN makes this fail, and the exporter keeps the empty text
		return string(text)
	}
	return ""
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var v value
		must(json.Unmarshal(in.Bytes(), &v))
		must(out.Encode(map[string]string{"s": asString(v)}))
	}
	must(in.Err())
}
