# One entry point per job. `make dev` runs ingot on the embedded default;
# `make test` runs every test. Both install what they need first.

CARGO ?= cargo
VENV := .venv
PLUGIN_TARGET := wasm32-wasip2

.PHONY: dev test lint setup setup-rust setup-packages setup-venv plugins agent

# The WasmPlugins of examples/dev point at the components `plugins` builds.
dev: setup-rust plugins
	$(CARGO) run --release -p ingot -- dev

# Benchmarks are built by clippy but not run here: they are separate commands.
test: setup lint plugins
	$(CARGO) test --workspace

lint: setup-rust
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

setup: setup-rust setup-packages setup-venv

# WebAssembly plugins the tests load, built one crate per cargo invocation:
# each enables one world feature of the SDK, and features unify within an
# invocation. Tests find them under $(CARGO_TARGET_DIR)/wasm32-wasip2/plugin.
WASM_PLUGINS := ingot-default-selector ingot-example-host-selection ingot-standard-steps \
	ingot-plugin-redfish ingot-plugin-ipmi \
	ingot-fixture-hostile ingot-fixture-file-reader ingot-fixture-socket-dialer ingot-fixture-bmc-escape

plugins: setup-rust
	@for crate in $(WASM_PLUGINS); do \
		$(CARGO) build --target $(PLUGIN_TARGET) --profile plugin -p $$crate || exit 1; \
	done

# The deploy agent as a static Linux binary, for a deploy image: target/x86_64-unknown-linux-gnu/release/ingot-agent.
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p ingot-agent --target x86_64-unknown-linux-gnu

setup-rust:
	rustup target add $(PLUGIN_TARGET)

# Debian packages for the third-party peers the tests talk to.
setup-packages:
	@command -v ipmitool >/dev/null || (apt-get update -qq && apt-get install -y -qq ipmitool)
	@# Deploy agent tests: qemu-img/qemu-io build reference images, sfdisk/mtools/blkid/wipefs read disks back.
	@command -v qemu-img >/dev/null && command -v sfdisk >/dev/null && command -v mtype >/dev/null && command -v mkfs.ext4 >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq qemu-utils fdisk mtools e2fsprogs util-linux)

# Python peers (Redfish and IPMI emulators) live in a venv inside the checkout.
setup-venv:
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/peers-requirements.txt
