package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Response is a decoded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// Do sends one request through client: body, when not empty, as JSON, and
// headers as name, value pairs. It returns the response as far as it was
// read, with the first error; Status is 0 when no response arrived.
func Do(client *http.Client, method, url, body string, headers ...string) (Response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return Response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, err
}

// NextEvent reads the next Server-Sent Event from r and decodes its data
// line as one JSON message (what MCP's Streamable HTTP sends).
func NextEvent(r *bufio.Reader) (map[string]any, error) {
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("reading an event: %w (so far %q)", err, data)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" && data != "" {
			break
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data = d
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		return nil, fmt.Errorf("event %q: %w", data, err)
	}
	return m, nil
}

// Events reads Server-Sent Events from r to its end and returns the JSON
// messages of their data lines, in order.
func Events(r io.Reader) []map[string]any {
	br := bufio.NewReaderSize(r, 1<<16)
	var out []map[string]any
	for {
		m, err := NextEvent(br)
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}
