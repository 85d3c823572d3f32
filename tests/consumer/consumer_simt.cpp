// SPDX-License-Identifier: Apache-2.0
// The same user program built by the host compiler in host SIMT mode.
#define FRUGAL_CONSUMER_NO_MAIN
#include "consumer.cu"

int main() { return run_consumer(); }
