// Package deploy holds the deployment artefacts (Dockerfile, Kubernetes, Prometheus, Grafana) and their static tests.
package deploy
