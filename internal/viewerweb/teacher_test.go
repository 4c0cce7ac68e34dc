package viewerweb

import (
	"encoding/json"
	"os/exec"
	"reflect"
	"testing"
)

// TestTeacherParseEvents runs teacher.js's Server-Sent Events parser in
// node: events split across reads, CRLF line ends, comments (the
// stream's pings), a CRLF split between reads, several data lines and
// an event without data; an unfinished event waits.
func TestTeacherParseEvents(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required (scripts/setup.sh installs it): %v", err)
	}
	src, err := files.ReadFile("web/teacher.js")
	if err != nil {
		t.Fatal(err)
	}
	// A stand-in for the page: teacher.js only looks elements up and
	// listens on them when it loads.
	script := `
const el = () => ({ addEventListener() {}, dataset: {}, replaceChildren() {}, children: [] });
globalThis.document = { getElementById: el, body: { dataset: {} } };
globalThis.window = globalThis;
` + string(src) + `
const chunks = JSON.parse(process.argv[1]);
let buf = '', out = [];
for (const c of chunks) {
  let evs;
  [evs, buf] = window.teacherView.parseEvents(buf + c);
  out.push(evs);
}
console.log(JSON.stringify({ out, rest: buf }));
`
	chunks := []string{
		": ping\n\nevent: room\nda", "ta: {\"device\":\"room-7\"}\n", "\nevent: room\r\ndata: a\r", "\ndata: b\r\n\r\n",
		"event: expired\n\n: ping\n\nevent: room\ndata: partial",
	}
	arg, _ := json.Marshal(chunks)
	out, err := exec.Command(node, "-e", script, string(arg)).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	type event struct{ Name, Data string }
	var got struct {
		Out  [][]event
		Rest string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	want := [][]event{
		{},
		{},
		{{"room", `{"device":"room-7"}`}},
		{{"room", "a\nb"}},
		{{"expired", ""}},
	}
	if !reflect.DeepEqual(got.Out, want) || got.Rest != "event: room\ndata: partial" {
		t.Errorf("parsed %+v, rest %q\nwant %+v, rest %q", got.Out, got.Rest, want, "event: room\ndata: partial")
	}
}
