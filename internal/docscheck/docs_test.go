package docscheck

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/publisher-dev/publisher/service"
)

// root is the repository's root, seen from this package's directory (where
// go test runs its tests).
const root = "../.."

const (
	architecture  = "docs/ARCHITECTURE.md"
	configuration = "docs/configuration.md"
)

func read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goList runs `go list args...` in the repository's root and returns its
// output lines. go test puts its own go command first on PATH.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = root
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// modulePath is go.mod's module path.
func modulePath(gomod string) string {
	for _, line := range strings.Split(gomod, "\n") {
		if p, ok := strings.CutPrefix(line, "module "); ok {
			return strings.TrimSpace(p)
		}
	}
	return ""
}

// packages is what go list says of the module: each package (relative to the
// module path, moving ones left out) with the packages of the module its
// non-test files import, and the packages the service binary is made of.
type packages struct {
	imports map[string][]string
	binary  map[string]bool // go list -deps ./cmd/publisher
}

func listPackages(t *testing.T) packages {
	t.Helper()
	mod := modulePath(read(t, "go.mod"))
	if mod == "" {
		t.Fatal("go.mod has no module line")
	}
	rel := func(p string) (string, bool) { return strings.CutPrefix(p, mod+"/") }
	pk := packages{imports: map[string][]string{}, binary: map[string]bool{}}
	// One line per package: the package, then its imports, each after a ';'.
	for _, line := range goList(t, "-f", `{{.ImportPath}}{{range .Imports}};{{.}}{{end}}`, "./...") {
		f := strings.Split(line, ";")
		p, ok := rel(f[0])
		if !ok {
			continue
		}
		imports := []string{}
		for _, imp := range f[1:] {
			if r, ok := rel(imp); ok {
				imports = append(imports, r)
			}
		}
		slices.Sort(imports)
		pk.imports[p] = imports
	}
	for _, d := range goList(t, "-deps", "-f", "{{.ImportPath}}", "./cmd/publisher") {
		if r, ok := rel(d); ok {
			pk.binary[r] = true
		}
	}
	if len(pk.imports) < 10 || !pk.binary["service"] {
		t.Fatalf("go list found too little: %d packages, binary made of %v", len(pk.imports), pk.binary)
	}
	return pk
}

// mdLine is one line of a Markdown file, with whether it belongs to a fenced
// code block (the fence lines do).
type mdLine struct {
	text string
	code bool
}

func mdLines(doc string) []mdLine {
	var lines []mdLine
	in := false
	sc := bufio.NewScanner(strings.NewReader(doc))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "```") {
			in = !in
			lines = append(lines, mdLine{l, true})
			continue
		}
		lines = append(lines, mdLine{l, in})
	}
	return lines
}

// headingLevel is the level of a Markdown heading line outside code ("## x"
// is 2), or 0.
func headingLevel(l mdLine) int {
	if l.code {
		return 0
	}
	n := len(l.text) - len(strings.TrimLeft(l.text, "#"))
	if n == 0 || n > 6 || !strings.HasPrefix(l.text[n:], " ") {
		return 0
	}
	return n
}

// section returns the lines under heading (e.g. "## Packages") up to the
// next heading of the same or a higher level, and false when doc has no
// such heading.
func section(doc, heading string) ([]mdLine, bool) {
	lines := mdLines(doc)
	for i, l := range lines {
		lvl := headingLevel(l)
		if lvl == 0 || l.text != heading {
			continue
		}
		end := len(lines)
		for j := i + 1; j < len(lines); j++ {
			if h := headingLevel(lines[j]); h != 0 && h <= lvl {
				end = j
				break
			}
		}
		return lines[i+1 : end], true
	}
	return nil, false
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// tableRows returns the cells, trimmed, of the table rows in lines whose
// first cell starts with code (header and separator rows do not).
func tableRows(lines []mdLine) [][]string {
	var rows [][]string
	for _, l := range lines {
		if l.code || !strings.HasPrefix(l.text, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(l.text), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

// checkDiagram checks the first code block under "## Packages" of the
// architecture page: it names exactly the packages the service binary is
// made of, each once and on a line above every package of the module it
// imports. A line of it is an arrow (drawing characters only) or package
// names separated by two spaces, then optionally three or more spaces and a
// description.
func checkDiagram(doc string, pk packages) []string {
	sec, ok := section(doc, "## Packages")
	if !ok {
		return []string{"no heading ## Packages"}
	}
	var diagram []string
	in := false
	for _, l := range sec {
		if strings.HasPrefix(l.text, "```") {
			if in {
				break
			}
			in = true
			continue
		}
		if in {
			diagram = append(diagram, l.text)
		}
	}
	if len(diagram) == 0 {
		return []string{"no diagram (a code block) under ## Packages"}
	}
	var problems []string
	descSep := regexp.MustCompile(`\s{3,}`)
	line := map[string]int{} // package -> its line in the diagram
	for i, l := range diagram {
		if strings.Trim(l, " │|↓v┬┴─") == "" {
			continue
		}
		for _, n := range strings.Fields(descSep.Split(strings.TrimSpace(l), 2)[0]) {
			n = strings.TrimSuffix(n, "/")
			if _, ok := pk.imports[n]; !ok {
				problems = append(problems, fmt.Sprintf("the diagram names %s, which is not a package of the module (go list ./...)", n))
				continue
			}
			if _, dup := line[n]; dup {
				problems = append(problems, fmt.Sprintf("the diagram names %s twice", n))
			}
			line[n] = i
		}
	}
	for _, d := range slices.Sorted(maps.Keys(pk.binary)) {
		if _, ok := line[d]; !ok {
			problems = append(problems, fmt.Sprintf("the diagram lacks %s, which the service binary is made of (go list -deps ./cmd/publisher)", d))
		}
	}
	for _, n := range slices.Sorted(maps.Keys(line)) {
		if !pk.binary[n] {
			problems = append(problems, fmt.Sprintf("the diagram names %s, which the service binary is not made of (go list -deps ./cmd/publisher)", n))
		}
		for _, imp := range pk.imports[n] {
			if j, ok := line[imp]; ok && j <= line[n] {
				problems = append(problems, fmt.Sprintf("%s imports %s, which the diagram does not draw below it", n, imp))
			}
		}
	}
	return problems
}

// checkPackageTable checks the table under "## Packages" of the
// architecture page whose rows are | `path/` | what | imports |: it lists
// every package of the module once and, for each, exactly the packages of the
// module its non-test code imports. Rows of moving packages are not checked.
func checkPackageTable(doc string, pk packages) []string {
	sec, ok := section(doc, "## Packages")
	if !ok {
		return []string{"no heading ## Packages"}
	}
	var problems []string
	listed := map[string]bool{}
	for _, r := range tableRows(sec) {
		m := codeSpan.FindStringSubmatch(r[0])
		if m == nil || len(r) != 3 {
			problems = append(problems, fmt.Sprintf("a package row is | `path/` | what | imports |: %v", r))
			continue
		}
		p := strings.TrimSuffix(m[1], "/")
		if listed[p] {
			problems = append(problems, fmt.Sprintf("%s is listed twice", p))
		}
		listed[p] = true
		want, ok := pk.imports[p]
		if !ok {
			problems = append(problems, fmt.Sprintf("the table lists %s, which is not a package of the module (go list ./...)", p))
			continue
		}
		got := []string{}
		for _, m := range codeSpan.FindAllStringSubmatch(r[2], -1) {
			got = append(got, strings.TrimSuffix(m[1], "/"))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("%s imports %v; the table says %v", p, want, got))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(pk.imports)) {
		if !listed[p] {
			problems = append(problems, fmt.Sprintf("the package table lacks %s (go list ./...)", p))
		}
	}
	return problems
}

// directRequirements are the modules go.mod requires without "// indirect".
func directRequirements(gomod string) []string {
	var reqs []string
	inBlock := false
	for _, line := range strings.Split(gomod, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !inBlock:
			continue
		}
		if line == "" || strings.HasPrefix(line, "//") || strings.Contains(line, "// indirect") {
			continue
		}
		reqs = append(reqs, strings.Fields(line)[0])
	}
	slices.Sort(reqs)
	return reqs
}

// checkDependencies checks that the module paths named as code under
// "### Dependencies" of the architecture page are exactly go.mod's direct
// requirements.
func checkDependencies(doc, gomod string) []string {
	want := directRequirements(gomod)
	if len(want) == 0 {
		return []string{"go.mod has no direct requirement"}
	}
	sec, ok := section(doc, "### Dependencies")
	if !ok {
		return []string{"no heading ### Dependencies"}
	}
	modPath := regexp.MustCompile(`^[a-z0-9.-]+\.[a-z]+/\S+$`)
	var got []string
	for _, l := range sec {
		for _, m := range codeSpan.FindAllStringSubmatch(l.text, -1) {
			if modPath.MatchString(m[1]) && !slices.Contains(got, m[1]) {
				got = append(got, m[1])
			}
		}
	}
	var problems []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			problems = append(problems, fmt.Sprintf("the dependency list lacks %s (a direct requirement of go.mod)", w))
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			problems = append(problems, fmt.Sprintf("the dependency list names %s, which go.mod does not require directly", g))
		}
	}
	return problems
}

// configVariables maps each PUBLISHER_* variable of service.Config (its
// envconfig tag) to its default (its default tag; "" for none).
func configVariables(t *testing.T) map[string]string {
	t.Helper()
	vars := map[string]string{}
	ct := reflect.TypeFor[service.Config]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, ok := f.Tag.Lookup("envconfig")
		if !ok {
			t.Fatalf("service.Config.%s has no envconfig tag naming its variable", f.Name)
		}
		vars["PUBLISHER_"+tag] = f.Tag.Get("default")
	}
	if len(vars) < 10 {
		t.Fatalf("service.Config has %d variables", len(vars))
	}
	return vars
}

// checkConfigTable checks that the table under "## Environment variables"
// of the configuration page lists exactly the variables of vars, each once,
// with its default as code ("empty…" when it has none).
func checkConfigTable(doc string, vars map[string]string) []string {
	sec, ok := section(doc, "## Environment variables")
	if !ok {
		return []string{"no heading ## Environment variables"}
	}
	var problems []string
	seen := map[string]bool{}
	for _, r := range tableRows(sec) {
		m := codeSpan.FindStringSubmatch(r[0])
		if m == nil || !strings.HasPrefix(m[1], "PUBLISHER_") {
			continue
		}
		name := m[1]
		if len(r) != 3 {
			problems = append(problems, fmt.Sprintf("the row of %s is not | variable | default | meaning |: %v", name, r))
			continue
		}
		if seen[name] {
			problems = append(problems, fmt.Sprintf("%s is listed twice", name))
		}
		seen[name] = true
		def, ok := vars[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("the table lists %s, which is not a field of service.Config", name))
		case def == "" && !strings.HasPrefix(r[1], "empty"):
			problems = append(problems, fmt.Sprintf("%s has no default; the table says %q", name, r[1]))
		case def != "" && !strings.Contains(r[1], "`"+def+"`"):
			problems = append(problems, fmt.Sprintf("%s defaults to %q; the table says %q", name, def, r[1]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if !seen[name] {
			problems = append(problems, fmt.Sprintf("the table lacks %s (a field of service.Config)", name))
		}
	}
	return problems
}

// slug is GitHub's anchor of a heading: lower case; letters, digits, '_'
// and '-' kept; spaces turned into '-'; everything else dropped.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '_', r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// anchors are the heading anchors of a Markdown document (a repeated heading
// gets -1, -2, … as on GitHub).
func anchors(doc string) map[string]bool {
	a := map[string]bool{}
	count := map[string]int{}
	for _, l := range mdLines(doc) {
		lvl := headingLevel(l)
		if lvl == 0 {
			continue
		}
		s := slug(strings.TrimSpace(l.text[lvl:]))
		if n := count[s]; n > 0 {
			a[s+"-"+strconv.Itoa(n)] = true
		} else {
			a[s] = true
		}
		count[s]++
	}
	return a
}

// mdLink matches the target of a Markdown link or image: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// checkLinks checks every relative link, outside code, of the documents
// (path relative to the root -> content; "README.md" among them): its file
// exists (exists answers for paths relative to the root), and its
// #fragment, into a Markdown file, is a heading's anchor there; and the
// README links every other document. It also returns how many relative
// links it checked.
func checkLinks(docs map[string]string, exists func(string) bool, readMD func(string) (string, bool)) (problems []string, n int) {
	linked := map[string]bool{}
	for _, f := range slices.Sorted(maps.Keys(docs)) {
		for _, l := range mdLines(docs[f]) {
			if l.code {
				continue
			}
			for _, m := range mdLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(l.text, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				n++
				path, frag, _ := strings.Cut(target, "#")
				dest := f
				if path != "" {
					dest = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(f), path)))
					if !exists(dest) {
						problems = append(problems, fmt.Sprintf("%s: link %s: no file %s", f, target, dest))
						continue
					}
				}
				if f == "README.md" {
					linked[dest] = true
				}
				if frag == "" || !strings.HasSuffix(dest, ".md") {
					continue
				}
				doc, ok := docs[dest]
				if !ok {
					if doc, ok = readMD(dest); !ok {
						problems = append(problems, fmt.Sprintf("%s: link %s: cannot read %s", f, target, dest))
						continue
					}
				}
				if !anchors(doc)[frag] {
					problems = append(problems, fmt.Sprintf("%s: link %s: %s has no heading with the anchor #%s", f, target, dest, frag))
				}
			}
		}
	}
	for _, f := range slices.Sorted(maps.Keys(docs)) {
		if f != "README.md" && !linked[f] {
			problems = append(problems, fmt.Sprintf("README.md does not link %s", f))
		}
	}
	return problems, n
}

// docs reads README.md and docs/*.md, by path relative to the root.
func docs(t *testing.T) map[string]string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	d := map[string]string{"README.md": read(t, "README.md")}
	for _, p := range pages {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		d[filepath.ToSlash(rel)] = read(t, rel)
	}
	return d
}

func report(t *testing.T, file string, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Errorf("%s: %s", file, p)
	}
}

// The diagram of docs/ARCHITECTURE.md names exactly the packages the service
// binary is made of, each above every package of the module it imports; its
// package table lists every package with exactly its imports.
func TestArchitecture(t *testing.T) {
	pk := listPackages(t)
	doc := read(t, architecture)
	report(t, architecture, checkDiagram(doc, pk))
	report(t, architecture, checkPackageTable(doc, pk))
}

// The dependency list of docs/ARCHITECTURE.md names exactly go.mod's direct
// requirements.
func TestArchitectureDependencies(t *testing.T) {
	report(t, architecture, checkDependencies(read(t, architecture), read(t, "go.mod")))
}

// The table of docs/configuration.md lists exactly service.Config's
// variables, with their defaults.
func TestConfigurationTable(t *testing.T) {
	report(t, configuration, checkConfigTable(read(t, configuration), configVariables(t)))
}

// Every relative link of README.md and docs/*.md reaches an existing file
// and heading; the README links every page of docs/.
func TestDocLinks(t *testing.T) {
	d := docs(t)
	exists := func(rel string) bool {
		_, err := os.Stat(filepath.Join(root, rel))
		return err == nil
	}
	readMD := func(rel string) (string, bool) {
		b, err := os.ReadFile(filepath.Join(root, rel))
		return string(b), err == nil
	}
	problems, n := checkLinks(d, exists, readMD)
	for _, p := range problems {
		t.Error(p)
	}
	// Fewer links than the README alone has means the parsing broke.
	if n < 10 {
		t.Errorf("found %d relative links in %d files", n, len(d))
	}
}

// Each check finds the drift it is there for, in a copy of today's
// documents changed by hand: a check that cannot fail would let a stale page
// pass.
func TestChecksCatchDrift(t *testing.T) {
	pk := listPackages(t)
	arch := read(t, architecture)
	gomod := read(t, "go.mod")
	conf := read(t, configuration)
	vars := configVariables(t)

	mustReplace := func(t *testing.T, s, old, new string) string {
		t.Helper()
		if !strings.Contains(s, old) {
			t.Fatalf("the document no longer holds %q: update this test", old)
		}
		return strings.Replace(s, old, new, 1)
	}
	expect := func(t *testing.T, what string, problems []string, want string) {
		t.Helper()
		for _, p := range problems {
			if strings.Contains(p, want) {
				return
			}
		}
		t.Errorf("%s: no problem mentioning %q, got %q", what, want, problems)
	}

	t.Run("today's documents pass", func(t *testing.T) {
		for _, p := range [][]string{checkDiagram(arch, pk), checkPackageTable(arch, pk), checkDependencies(arch, gomod), checkConfigTable(conf, vars)} {
			if len(p) != 0 {
				t.Errorf("%q", p)
			}
		}
	})
	t.Run("diagram lacks a package", func(t *testing.T) {
		doc := mustReplace(t, arch, "supervision  spool  tracing", "supervision  spool")
		expect(t, "checkDiagram", checkDiagram(doc, pk), "lacks tracing")
	})
	t.Run("diagram names a package that is gone", func(t *testing.T) {
		doc := mustReplace(t, arch, "httpapi  metrics", "httpapi  metrics  gone")
		expect(t, "checkDiagram", checkDiagram(doc, pk), "names gone")
	})
	t.Run("an arrow points up", func(t *testing.T) {
		// publisher drawn on relay's line instead of its own, below it.
		doc := mustReplace(t, arch, "\nrelay  ", "\nrelay  publisher  ")
		own := regexp.MustCompile(`(?m)^publisher {3,}the actor.*\n`)
		if !own.MatchString(doc) {
			t.Fatal("the diagram no longer has publisher's own line: update this test")
		}
		doc = own.ReplaceAllString(doc, "")
		expect(t, "checkDiagram", checkDiagram(doc, pk), "relay imports publisher, which the diagram does not draw below it")
	})
	t.Run("table states an import that is not made", func(t *testing.T) {
		doc := mustReplace(t, arch, "| `supervision` |\n| `supervision/`", "| `supervision`, `tracing` |\n| `supervision/`")
		expect(t, "checkPackageTable", checkPackageTable(doc, pk), "publisher imports [supervision]; the table says [supervision tracing]")
	})
	t.Run("table lacks a package", func(t *testing.T) {
		i := strings.Index(arch, "| `internal/poll/` |")
		j := i + strings.Index(arch[i:], "\n") + 1
		expect(t, "checkPackageTable", checkPackageTable(arch[:i]+arch[j:], pk), "lacks internal/poll")
	})
	t.Run("dependency list lacks a requirement", func(t *testing.T) {
		doc := mustReplace(t, arch, "`go.uber.org/goleak`", "goleak")
		expect(t, "checkDependencies", checkDependencies(doc, gomod), "lacks go.uber.org/goleak")
	})
	t.Run("configuration table has a stale default", func(t *testing.T) {
		doc := mustReplace(t, conf, "| `PUBLISHER_CONFIRM_TIMEOUT` | `10s` |", "| `PUBLISHER_CONFIRM_TIMEOUT` | `5s` |")
		expect(t, "checkConfigTable", checkConfigTable(doc, vars), "PUBLISHER_CONFIRM_TIMEOUT defaults to \"10s\"")
	})
	t.Run("configuration table lacks a variable", func(t *testing.T) {
		delete(vars, "PUBLISHER_LOG_FORMAT")
		defer func() { vars["PUBLISHER_LOG_FORMAT"] = "json" }()
		expect(t, "checkConfigTable", checkConfigTable(conf, vars), "lists PUBLISHER_LOG_FORMAT, which is not a field")
		vars["PUBLISHER_NEW"] = ""
		defer delete(vars, "PUBLISHER_NEW")
		expect(t, "checkConfigTable", checkConfigTable(conf, vars), "lacks PUBLISHER_NEW")
	})
	t.Run("links", func(t *testing.T) {
		docs := map[string]string{
			"README.md":    "[a](docs/a.md#two) [b](docs/a.md#gone) [c](missing.md) [d](#why-not-) `[e](nowhere.md)`\n\n## Why not …\n",
			"docs/a.md":    "# One\n\n```sh\n# two\n```\n\n## Two (optional)\n\n[r](../README.md#why-not-) [s](b.md)\n",
			"docs/b.md":    "# B\n",
			"docs/lone.md": "# Lone\n",
		}
		exists := func(p string) bool { _, ok := docs[p]; return ok }
		problems, n := checkLinks(docs, exists, func(string) (string, bool) { return "", false })
		if n != 6 {
			t.Errorf("checked %d links, want 6 (the one in code is not a link): %q", n, problems)
		}
		expect(t, "checkLinks", problems, "docs/a.md has no heading with the anchor #two")
		expect(t, "checkLinks", problems, "docs/a.md has no heading with the anchor #gone")
		expect(t, "checkLinks", problems, "no file missing.md")
		expect(t, "checkLinks", problems, "README.md does not link docs/lone.md")
		expect(t, "checkLinks", problems, "README.md does not link docs/b.md")
		if len(problems) != 5 {
			t.Errorf("got %d problems, want 5: %q", len(problems), problems)
		}
		if got := slug("Two (optional)"); got != "two-optional" {
			t.Errorf("slug = %q", got)
		}
	})
}
