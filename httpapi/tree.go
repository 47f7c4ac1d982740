package httpapi

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"time"

	"github.com/munnerz/goautoneg"

	"github.com/publisher-dev/publisher/supervision"
)

// treeRefresh is how often the HTML page reloads itself while open.
const treeRefresh = 2 * time.Second

// treeHandler serves GET /debug/supervision: the live supervision tree and
// the service's state, as JSON (Accept: application/json) or as one
// self-contained HTML page.
type treeHandler struct {
	tree   func() supervision.SupervisorInfo
	redact func(error) string
	ready  func() (bool, map[string]any)
	now    func() time.Time
}

// TreeNode is one supervisor or child in the JSON answer of
// /debug/supervision. The root has no Restart, Stats or LastError; a
// supervisor has Strategy and Children.
type TreeNode struct {
	Name     string `json:"name"`
	State    string `json:"state"`              // running, restarting or stopped
	Restart  string `json:"restart,omitempty"`  // permanent, transient or temporary
	Strategy string `json:"strategy,omitempty"` // a supervisor's: one-for-one, one-for-all, rest-for-one
	// Stats are the child's restart statistics as of its latest failure.
	Stats *TreeStats `json:"stats,omitempty"`
	// LastError is the text of the child's latest failure, passed through
	// AdminConfig.RedactError.
	LastError   string     `json:"last_error,omitempty"`
	NextRestart *time.Time `json:"next_restart,omitempty"`
	Children    []TreeNode `json:"children,omitempty"`
}

// TreeStats are supervision.ChildRestartStats in JSON.
type TreeStats struct {
	FailuresInWindow  int        `json:"failures_in_window"`
	TotalRestarts     int        `json:"total_restarts"`
	FirstFailure      *time.Time `json:"first_failure,omitempty"`
	LastFailure       *time.Time `json:"last_failure,omitempty"`
	LastUptimeSeconds float64    `json:"last_uptime_seconds"`
	Progressed        bool       `json:"progressed"`
}

// TreeAnswer is the JSON answer of /debug/supervision.
type TreeAnswer struct {
	Time    time.Time      `json:"time"`
	Ready   bool           `json:"ready"`
	Service map[string]any `json:"service"` // what /readyz reports besides "ready"
	Tree    TreeNode       `json:"tree"`
}

func (h treeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ans := h.answer()
	if goautoneg.Negotiate(r.Header.Get("Accept"), []string{"text/html", "application/json"}) == "application/json" {
		writeJSON(w, http.StatusOK, ans, map[string]any{"error": "the tree cannot be encoded as JSON"})
		return
	}
	var buf bytes.Buffer
	if err := treePage.Execute(&buf, newPageData(ans)); err != nil {
		writeJSONError(w, http.StatusInternalServerError, "rendering the page: "+err.Error(), "")
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/html; charset=utf-8"}
	hdr["X-Content-Type-Options"] = noSniff[:1:1]
	hdr["Cache-Control"] = []string{"no-store"}
	// Nothing on the page comes from elsewhere: no script, no style sheet,
	// no image, no frame.
	hdr["Content-Security-Policy"] = []string{"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// answer reads the tree and the service's state once each.
func (h treeHandler) answer() TreeAnswer {
	ans := TreeAnswer{Time: h.now().UTC(), Ready: true, Service: map[string]any{}}
	if h.ready != nil {
		ready, detail := h.ready()
		ans.Ready = ready
		for k, v := range detail {
			ans.Service[k] = v
		}
		delete(ans.Service, "ready") // Ready says it, as on /readyz
	}
	info := h.tree()
	ans.Tree = h.supervisorNode(info, "")
	ans.Tree.State = "stopped"
	if info.Serving {
		ans.Tree.State = "running"
	}
	return ans
}

func (h treeHandler) supervisorNode(info supervision.SupervisorInfo, state string) TreeNode {
	n := TreeNode{Name: info.Name, State: state, Strategy: info.Strategy.String()}
	for _, c := range info.Children {
		n.Children = append(n.Children, h.childNode(c))
	}
	return n
}

func (h treeHandler) childNode(c supervision.ChildInfo) TreeNode {
	n := TreeNode{Name: c.Name}
	if c.Supervisor != nil {
		n = h.supervisorNode(*c.Supervisor, "")
		n.Name = c.Name
	}
	n.State, n.Restart = c.State.String(), c.Restart.String()
	st := c.Stats
	n.Stats = &TreeStats{
		FailuresInWindow:  st.Failures,
		TotalRestarts:     st.TotalRestarts,
		FirstFailure:      timeOrNil(st.FirstFailure),
		LastFailure:       timeOrNil(st.LastFailure),
		LastUptimeSeconds: st.LastUptime.Seconds(),
		Progressed:        st.Progressed,
	}
	if c.LastError != nil {
		n.LastError = h.redact(c.LastError)
	}
	n.NextRestart = timeOrNil(c.NextRestart)
	return n
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

//go:embed tree.html
var treeHTML string

// treePage renders a pageData as the HTML page; html/template escapes every
// name and error text.
var treePage = template.Must(template.New("tree").Parse(treeHTML))

// pageData is what the page shows, every text made here so the template
// only lays it out.
type pageData struct {
	Time    string
	Refresh int
	Ready   bool
	Tree    nodeView
	Service []serviceRow
}

type nodeView struct {
	Name, State, Kind string
	HasStats          bool
	Restarts          int
	Failures          int
	LastFailure       string // "12s ago"
	Uptime            string // how long the last incarnation ran
	NextRestart       string // "in 1.2s"
	Progressed        bool
	LastError         string
	Children          []nodeView
}

type serviceRow struct{ Key, Value string }

func newPageData(ans TreeAnswer) pageData {
	d := pageData{
		Time:    ans.Time.Format("2006-01-02 15:04:05 UTC"),
		Refresh: int(treeRefresh / time.Second),
		Ready:   ans.Ready,
		Tree:    newNodeView(ans.Tree, ans.Time),
	}
	keys := make([]string, 0, len(ans.Service))
	for k := range ans.Service {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.Service = append(d.Service, serviceRow{k, fmt.Sprint(ans.Service[k])})
	}
	return d
}

func newNodeView(n TreeNode, now time.Time) nodeView {
	v := nodeView{Name: n.Name, State: n.State, LastError: n.LastError}
	switch {
	case n.Restart == "": // the root
		v.Kind = "supervisor, " + n.Strategy
	case n.Strategy != "":
		v.Kind = n.Restart + " supervisor, " + n.Strategy
	default:
		v.Kind = n.Restart + " worker"
	}
	if st := n.Stats; st != nil {
		v.HasStats = true
		v.Restarts, v.Failures, v.Progressed = st.TotalRestarts, st.FailuresInWindow, st.Progressed
		if st.LastFailure != nil {
			v.LastFailure = roundDuration(now.Sub(*st.LastFailure)) + " ago"
			v.Uptime = roundDuration(time.Duration(st.LastUptimeSeconds * float64(time.Second)))
		}
	}
	if n.NextRestart != nil {
		if d := n.NextRestart.Sub(now); d > 0 {
			v.NextRestart = "in " + roundDuration(d)
		} else {
			v.NextRestart = "due"
		}
	}
	for _, c := range n.Children {
		v.Children = append(v.Children, newNodeView(c, now))
	}
	return v
}

// roundDuration shows a duration to a useful precision.
func roundDuration(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d < time.Second:
		d = d.Round(time.Millisecond)
	case d < time.Minute:
		d = d.Round(100 * time.Millisecond)
	default:
		d = d.Round(time.Second)
	}
	return d.String()
}
