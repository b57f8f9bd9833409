// kvblockd._core: the nanobind extension over the C++ client library.
// The Python package (kvblockd/) builds the public API on top of it.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "connection.h"
#include "kvb/client/client.h"
#include "region.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace kvbpy {
namespace {

/// An outcome as Python values: (ticket, code, message, value).
nb::tuple to_python(const Outcome& o) {
  nb::object value = std::visit(
      [](const auto& v) -> nb::object {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::monostate>) {
          return nb::none();
        } else if constexpr (std::is_same_v<V, kvb::client::HelloInfo>) {
          nb::dict d;
          d["session_id"] = v.session_id.value();
          d["version"] = v.version;
          d["max_frame_bytes"] = v.max_frame_bytes;
          d["max_inflight"] = v.max_inflight;
          d["gpu_present"] = v.gpu_present;
          d["server_version"] = v.server_version;
          return d;
        } else if constexpr (std::is_same_v<V, kvb::client::LookupResult>) {
          nb::dict tiers;
          for (const auto& t : v.tiers) tiers[nb::int_(static_cast<int>(t.tier))] = t.blocks;
          return nb::make_tuple(v.prefix_blocks, tiers);
        } else if constexpr (std::is_same_v<V, std::vector<kvb::client::WorkerPrefix>>) {
          nb::list workers;
          for (const auto& w : v) workers.append(nb::make_tuple(w.worker, w.prefix_blocks));
          return workers;
        } else if constexpr (std::is_same_v<V, kvb::client::RequestStatus>) {
          return nb::make_tuple(static_cast<int>(v.state), v.message);
        } else {
          return nb::cast(v);
        }
      },
      o.value);
  return nb::make_tuple(o.ticket, static_cast<int>(o.code), o.message, value);
}

}  // namespace
}  // namespace kvbpy

NB_MODULE(_core, m) {
  using kvbpy::Connection;
  m.doc() = "kvblockd client core (C++ client library binding). Use the kvblockd package, not this module.";
  // Objects still referenced at interpreter exit (a torch tensor over a region's buffer, a
  // client in a module global) are normal here; nanobind would list them as leaks.
  nb::set_leak_warnings(false);

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const kvbpy::Failure& f) {
      nb::object exc =
          nb::module_::import_("kvblockd.errors").attr("error_for")(static_cast<int>(f.error.code), f.error.message);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

  m.def(
      "errc_names",
      [] {
        std::vector<std::string> names;
        for (int c = 0; c <= static_cast<int>(kvb::Errc::wrong_state); ++c)
          names.emplace_back(kvb::to_string(static_cast<kvb::Errc>(c)));
        return names;
      },
      "Errc names by code, from the C++ library (docs/protocol.md).");

  m.def("default_socket_path", &kvb::client::default_socket_path,
        "The socket kvblockd listens on by default (docs/configuration.md).");

  kvbpy::bind_region(m);

  nb::class_<Connection>(m, "Connection", "One session with kvblockd (io thread in C++; see kvblockd.Client).")
      .def(nb::init<const std::string&>(), "path"_a, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "hello",
          [](Connection& c, const std::string& name, std::uint64_t salt, const kvb::client::BlockShape& shape,
             bool async) { return c.hello(name, salt, shape, async); },
          "name"_a, "salt"_a, "shape"_a, "async_"_a)
      .def("register_kv", &Connection::register_kv, "region"_a, "async_"_a)
      .def("lookup", &Connection::lookup, "hashes"_a, "pin"_a, "async_"_a)
      .def("locate", &Connection::locate, "hashes"_a, "async_"_a)
      .def("offload", &Connection::offload, "blocks"_a, "hashes"_a, "async_"_a)
      .def("onboard", &Connection::onboard, "blocks"_a, "hashes"_a, "async_"_a)
      .def("release", &Connection::release, "hashes"_a, "async_"_a)
      .def("status", &Connection::status, "request_id"_a, "async_"_a)
      .def("wait", &Connection::wait, "request_id"_a, "timeout_ms"_a, "async_"_a)
      .def("stats", &Connection::stats, "async_"_a)
      .def("config", &Connection::config, "async_"_a)
      .def("drain", &Connection::drain, "async_"_a)
      .def("bye", &Connection::bye, "async_"_a)
      .def("request_id", &Connection::request_id_of, "ticket"_a)
      .def("ready", &Connection::ready, "ticket"_a)
      .def(
          "take",
          [](Connection& c, std::uint64_t ticket, double timeout_s) {
            kvbpy::Outcome out;
            bool interrupted = false;
            {
              nb::gil_scoped_release release;
              out = c.take(ticket, timeout_s, [&interrupted] {
                nb::gil_scoped_acquire acquire;
                interrupted = PyErr_CheckSignals() != 0;  // a signal handler raised (KeyboardInterrupt, ...)
                return interrupted;
              });
            }
            if (interrupted) throw nb::python_error();  // the handler's exception, still set on this thread
            return kvbpy::to_python(out);
          },
          "ticket"_a, "timeout_s"_a,
          "Wait for a blocking ticket's outcome: (ticket, code, message, value). Signals are checked every 100 ms.")
      .def("drain_async",
           [](Connection& c) {
             nb::list out;
             for (const auto& o : c.drain_async()) out.append(kvbpy::to_python(o));
             return out;
           })
      .def_prop_ro("event_fd", &Connection::event_fd)
      .def_prop_ro("is_open", &Connection::is_open)
      .def_prop_ro("pending", &Connection::pending)
      .def("close", &Connection::close, nb::call_guard<nb::gil_scoped_release>());
}
