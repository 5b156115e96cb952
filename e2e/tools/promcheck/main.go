// promcheck checks what the chart ships for Prometheus with Prometheus' own PromQL parser, so that a
// typo in an alert or a dashboard query fails the tests instead of a user's Prometheus or Grafana.
//
//	promcheck rules < groups.json   rule groups ({"groups":[{"name","rules":[{alert,expr,for,labels,annotations}]}]}):
//	                                expressions, durations, and label and annotation templates
//	promcheck exprs < exprs.json    a JSON array of PromQL expressions
//	promcheck watch ...             scrapes targets and evaluates alerting rules (watch.go)
//
// (Prometheus' rulefmt package would do the rules in one call, but it pulls in the storage layer, some of
// whose dependencies the module proxy does not serve; this checks the same parts with the parser.)
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type groups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

// The functions Prometheus gives alert templates (template/template.go); only their names matter to a parse.
var templateFuncs = template.FuncMap{}

func init() {
	for _, name := range []string{"query", "first", "label", "value", "strvalue", "args", "reReplaceAll", "safeHtml",
		"match", "title", "toUpper", "toLower", "graphLink", "tableLink", "sortByLabel", "stripPort", "stripDomain",
		"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp", "toTime",
		"toDuration", "pathPrefix", "externalURL", "parseDuration", "now", "urlQueryEscape"} {
		templateFuncs[name] = func(...any) any { return nil }
	}
}

// Prometheus' parser, with the default functions and options.
var exprParser = parser.NewParser(parser.Options{})

// The variables Prometheus defines before an alert template.
const templateHeader = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"

func checkRules(in *json.Decoder) []string {
	var g groups
	if err := in.Decode(&g); err != nil {
		return []string{"stdin is not rule groups in JSON: " + err.Error()}
	}
	var problems []string
	n := 0
	for _, group := range g.Groups {
		if group.Name == "" {
			problems = append(problems, "a group has no name")
		}
		for _, r := range group.Rules {
			n++
			name := r.Alert + r.Record
			if (r.Alert == "") == (r.Record == "") {
				problems = append(problems, fmt.Sprintf("rule %d of %s: needs exactly one of alert and record", n, group.Name))
			}
			if !model.UTF8Validation.IsValidMetricName(name) || strings.ContainsAny(name, " {}") {
				problems = append(problems, fmt.Sprintf("%s: not a valid rule name", name))
			}
			if _, err := exprParser.ParseExpr(r.Expr); err != nil {
				problems = append(problems, fmt.Sprintf("%s: expr: %v", name, err))
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					problems = append(problems, fmt.Sprintf("%s: for: %v", name, err))
				}
			}
			for kind, m := range map[string]map[string]string{"label": r.Labels, "annotation": r.Annotations} {
				for k, v := range m {
					if !model.LabelName(k).IsValidLegacy() {
						problems = append(problems, fmt.Sprintf("%s: %s name %q is not valid", name, kind, k))
					}
					if _, err := template.New(k).Funcs(templateFuncs).Option("missingkey=zero").Parse(templateHeader + v); err != nil {
						problems = append(problems, fmt.Sprintf("%s: %s %s: %v", name, kind, k, err))
					}
				}
			}
		}
	}
	if len(problems) == 0 {
		fmt.Printf("%d rules OK\n", n)
	}
	return problems
}

func checkExprs(in *json.Decoder) []string {
	var exprs []string
	if err := in.Decode(&exprs); err != nil {
		return []string{"stdin is not a JSON array of strings: " + err.Error()}
	}
	var problems []string
	for _, e := range exprs {
		if _, err := exprParser.ParseExpr(e); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", e, err))
		}
	}
	if len(problems) == 0 {
		fmt.Printf("%d expressions OK\n", len(exprs))
	}
	return problems
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "watch" {
		if err := watch(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "promcheck watch:", err)
			os.Exit(1)
		}
		return
	}
	var problems []string
	switch strings.Join(os.Args[1:], " ") {
	case "rules":
		problems = checkRules(json.NewDecoder(os.Stdin))
	case "exprs":
		problems = checkExprs(json.NewDecoder(os.Stdin))
	default:
		fmt.Fprintln(os.Stderr, "usage: promcheck rules < groups.json | promcheck exprs < exprs.json | promcheck watch --rules groups.json --target URL ...")
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}
