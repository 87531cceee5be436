//! A service on the async API: publish-subscribe, a queue with retries and
//! dead letters, request-reply and scatter-gather, every step awaited.
//!
//! `cargo run --example tokio_service` runs it on a tokio multi-thread
//! runtime over an embedded bus in a temporary directory; `-- --smol` runs
//! the same code under smol. With `--features nats -- --nats <url>` it
//! runs on NATS JetStream (topics of its own per run). Everything happens
//! inside the runtime: the handles are opened with blocking calls on the
//! runtime's blocking threads (`spawn_blocking`, `smol::unblock`), then
//! every step is awaited.
//!
//! On NATS, a bus connected inside a multi-thread tokio runtime (here from
//! `spawn_blocking`) runs its connection on that runtime, with no thread of
//! logbus's own, and lives as long as it: the blocking calls after the
//! service ran come before the runtime is dropped. Under smol (no tokio
//! runtime) the bus runs on a private runtime of its own.

use std::time::Duration;

use futures::StreamExt;
use logbus::{
    Backoff, Bus, BusOptions, Error, Gather, GroupOptions, Recipients, Record, RetryPolicy, StartAt,
};

fn main() -> logbus::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let nats_url = match args.iter().position(|a| a == "--nats") {
        Some(i) => Some(
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument("--nats needs a URL".into()))?,
        ),
        None => None,
    };
    let path = dir.path().to_path_buf();
    // Opening a bus and its handles is blocking I/O (files, or round trips
    // to the server): it runs off the executor's threads.
    let open = move || match nats_url {
        Some(url) => Service::open(connect_nats(&url)?, true),
        None => Service::open(Bus::open(&path, BusOptions::default())?, false),
    };
    let (service, runtime) = if args.iter().any(|a| a == "--smol") {
        println!("on smol");
        let service = smol::block_on(async {
            let mut service = smol::unblock(open).await?;
            service.run().await?;
            Ok::<_, Error>(service)
        })?;
        (service, None)
    } else {
        println!("on tokio (multi-thread)");
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let service = runtime.block_on(async {
            let opening = tokio::task::spawn_blocking(open);
            let mut service = opening.await.expect("the opening thread panicked")?;
            service.run().await?;
            Ok::<_, Error>(service)
        })?;
        (service, Some(runtime))
    };
    // A blocking call, outside the async code (on NATS it asks the server,
    // over the runtime's connection: the runtime is still running).
    println!("billing: {:?}", service.billing.stats()?);
    service.bus.close()?;
    drop(service);
    drop(runtime);
    Ok(())
}

#[cfg(feature = "nats")]
fn connect_nats(url: &str) -> logbus::Result<Bus> {
    Bus::connect_nats(url, logbus::NatsOptions::default())
}

#[cfg(not(feature = "nats"))]
fn connect_nats(_url: &str) -> logbus::Result<Bus> {
    Err(Error::InvalidArgument(
        "--nats needs the nats feature: cargo run --example tokio_service --features nats -- --nats <url>"
            .into(),
    ))
}

/// The handles, opened with blocking calls.
struct Service {
    bus: Bus,
    orders: logbus::Topic,
    audit: logbus::Subscription,
    billing: logbus::Group,
    pricing: logbus::Responder,
    checkout: logbus::Requester,
    pricing_topic: String,
}

impl Service {
    fn open(bus: Bus, nats: bool) -> logbus::Result<Service> {
        let run = match nats {
            true => format!("svc-{}.", logbus::CorrelationId::new().as_u128() >> 80),
            false => String::new(),
        };
        let orders = bus.topic(&format!("{run}orders"))?;
        let retry = RetryPolicy::default()
            .max_attempts(2)
            .backoff(Backoff::Fixed(Duration::ZERO));
        let billing = orders.group("billing", GroupOptions::default().retry(retry))?;
        let audit = orders.subscribe("audit", StartAt::Earliest)?;
        let pricing_topic = format!("{run}pricing");
        Ok(Service {
            pricing: bus.responder(&pricing_topic)?,
            checkout: bus.requester(&format!("{run}checkout"))?,
            audit,
            bus,
            orders,
            billing,
            pricing_topic,
        })
    }

    async fn run(&mut self) -> logbus::Result<()> {
        // Publish: each await returns once the record is stored (durable
        // under the default durability), without blocking the thread.
        for order in ["order 1", "order 2", "poison"] {
            let offset = self.orders.publish_async(&Record::new(order.as_bytes())).await?;
            println!("published {order:?} at {offset}");
        }

        // Publish-subscribe: a stream of the subscription's records.
        let mut records = self.audit.stream().take(3);
        while let Some(record) = records.next().await {
            println!("audit saw {:?}", String::from_utf8_lossy(record?.value()));
        }
        drop(records);
        self.audit.commit_async().await?;

        // A queue: ack the good ones; the poison one fails twice and goes
        // to the dead-letter topic.
        let mut deliveries = self.billing.stream();
        let mut settled = 0;
        while settled < 3 {
            let delivery = deliveries.next().await.expect("a stream ends only on an error")?;
            match delivery.record().value() {
                b"poison" if delivery.attempt() < 2 => delivery.nack_async("cannot bill").await?,
                b"poison" => {
                    delivery.reject_async("cannot bill, giving up").await?;
                    settled += 1;
                }
                _ => {
                    delivery.ack_async().await?;
                    settled += 1;
                }
            }
        }
        println!("billing settled {settled} orders");

        // Request-reply: a responder task answers while the request waits.
        let sku = Record::new(b"sku-7");
        let (reply, served) = futures::join!(self.checkout.request_async(&self.pricing_topic, &sku), async {
            let request = self.pricing.recv_async().await?;
            request.reply_async(&Record::new(b"3.20")).await
        });
        served?;
        println!("price of sku-7: {:?}", String::from_utf8_lossy(reply?.value()));

        // Scatter-gather: ask every pricing service, gather until all
        // replied or a second passed.
        let quote = Record::new(b"quote 10 apples");
        let scatter = self
            .checkout
            .scatter_async(Recipients::Services(vec![self.pricing_topic.clone()]), &quote)
            .await?;
        let (gathered, served) =
            futures::join!(scatter.gather_async(Gather::all(Duration::from_secs(1))), async {
                let request = self.pricing.recv_async().await?;
                request.reply_async(&Record::new(b"4.00")).await
            });
        served?;
        let gathered = gathered?;
        println!(
            "gathered {} replies ({:?})",
            gathered.replies.len(),
            gathered.stopped
        );
        Ok(())
    }
}
