//! The XDP dataplane (`floatlb-dataplane`) behind the daemon's [`Datapath`]
//! trait, and the conversion from validated configuration to its specs.

use std::net::Ipv4Addr;

use floatlb_dataplane::{
    Dataplane, DataplaneError, DataplaneOptions, EndpointSpec, ServiceSpec, XdpMode,
};

use crate::{
    config::Service,
    daemon::{Datapath, XdpModeArg},
};

/// The datapath's view of a configured service: keyed by (VIP, port,
/// protocol), source-NATed to the service's floating address.
pub fn service_spec(s: &Service) -> ServiceSpec {
    ServiceSpec {
        vip: s.vip(),
        port: s.port,
        proto: s.protocol.ip_proto(),
        sel: s.sel.sel(),
        snat_ip: s.snat_ip(),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| EndpointSpec {
                ip: e.ip,
                port: e.port,
                weight: e.weight,
            })
            .collect(),
        idle_timeout_secs: s.inactive_timeout,
    }
}

/// The loaded XDP program and its maps.
pub struct XdpDatapath {
    dp: Dataplane,
}

impl XdpDatapath {
    /// Loads the program, or re-opens the pinned one a previous agent left.
    pub fn open(opts: &DataplaneOptions) -> Result<Self, DataplaneError> {
        Ok(Self {
            dp: Dataplane::open(opts)?,
        })
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }
}

impl Datapath for XdpDatapath {
    type Error = DataplaneError;

    fn sync_services(&mut self, services: &[Service]) -> Result<(), DataplaneError> {
        let specs: Vec<ServiceSpec> = services.iter().map(service_spec).collect();
        self.dp.sync_services(&specs)
    }

    fn upsert_service(&mut self, service: &Service) -> Result<(), DataplaneError> {
        self.dp.upsert_service(&service_spec(service))
    }

    fn remove_service(&mut self, service: &Service) -> Result<(), DataplaneError> {
        self.dp.remove_service(service_spec(service).key())
    }

    fn conntrack_dump(&self) -> Result<Vec<floatlb_dataplane::CtRecord>, DataplaneError> {
        self.dp.conntrack_dump()
    }

    fn set_fib_lookup_iface(&mut self, iface: Option<&str>) -> Result<(), DataplaneError> {
        self.dp.set_fib_lookup_iface(iface)
    }

    fn attach(&mut self, iface: &str, mode: XdpModeArg) -> Result<String, DataplaneError> {
        let mode = match mode {
            XdpModeArg::Auto => XdpMode::Auto,
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        };
        Ok(format!("{:?}", self.dp.attach(iface, mode)?))
    }

    fn set_active(&mut self, active: bool) -> Result<(), DataplaneError> {
        self.dp.set_active(active)
    }

    fn conntrack_sweeper(
        &self,
    ) -> Result<
        Box<dyn FnMut() -> Result<Vec<floatlb_dataplane::FlowKey>, DataplaneError> + Send>,
        DataplaneError,
    > {
        let mut sweeper = self.dp.conntrack_sweeper()?;
        Ok(Box::new(move || sweeper.expire()))
    }

    fn stats_reader(&self) -> Option<crate::metrics::scrape::StatsFn> {
        match self.dp.stats_reader() {
            Ok(mut r) => Some(Box::new(move || r.read().map_err(Into::into))),
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot open the datapath counters");
                None
            }
        }
    }

    fn invalidate_nexthops(&mut self) -> Result<(), DataplaneError> {
        self.dp.invalidate_nexthops()
    }

    fn take_unresolved_neighbours(&mut self) -> Vec<Ipv4Addr> {
        self.dp.take_unresolved_neighbours()
    }

    fn shutdown(self, keep_pinned: bool) -> Result<(), DataplaneError> {
        if keep_pinned {
            self.dp.release();
            Ok(())
        } else {
            self.dp.unload()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LbConfig;

    #[test]
    fn config_service_maps_to_the_datapath_spec() {
        let cfg = LbConfig::parse(
            r#"{"lbAttr":[{"serviceArguments":{"externalIP":"203.0.113.10","privateIP":"10.10.0.10",
                "port":53,"protocol":"udp","sel":3,"mode":1,"inactiveTimeOut":30},
                "endpoints":[{"endpointIP":"10.0.1.5","targetPort":5353,"weight":4}]}]}"#,
            false,
            "t.json",
            &crate::config::file_limits(),
        )
        .unwrap();
        let spec = service_spec(&cfg.services[0]);
        assert_eq!(spec.vip, Ipv4Addr::new(10, 10, 0, 10));
        assert_eq!(spec.snat_ip, Ipv4Addr::new(10, 10, 0, 10));
        assert_eq!((spec.port, spec.proto, spec.sel), (53, 17, 3));
        assert_eq!(spec.idle_timeout_secs, Some(30));
        assert_eq!(
            spec.endpoints,
            [EndpointSpec {
                ip: Ipv4Addr::new(10, 0, 1, 5),
                port: 5353,
                weight: 4
            }]
        );
    }
}
