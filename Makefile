.PHONY: run test bench
run: ## start a broker (when missing) and the service
	bash scripts/run.sh
test: ## gofmt, vet, and every test with -race against real brokers
	bash scripts/test.sh
bench: ## the side-by-side load comparison (a private broker with the management plugin)
	bash scripts/bench.sh
