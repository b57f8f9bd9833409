// kvblockd IPC protocol v1: the one include for both the daemon and the
// client library. docs/protocol.md is the contract.
//
//   protocol_frame.h     header, message types, FrameParser, completion text
//   protocol_messages.h  one struct per message + payload codecs
//   wire.h               bounded little-endian WireWriter / WireReader
#pragma once

#include "kvb/common/protocol_frame.h"
#include "kvb/common/protocol_messages.h"
#include "kvb/common/wire.h"
