# A Sidekiq 6 app as its users write it: Redis behind a namespace, jobs that record what they did.
require "sidekiq"
require "redis-namespace"

Redis.sadd_returns_boolean = false

REDIS_URL = "redis://127.0.0.1:#{ENV.fetch("REDIS_PORT")}/0"
Sidekiq.configure_server do |config|
  config.redis = { url: REDIS_URL, namespace: "sq" }
  config.options[:average_scheduled_poll_interval] = 1
end
Sidekiq.configure_client { |config| config.redis = { url: REDIS_URL, namespace: "sq" } }

class Work
  include Sidekiq::Worker
  def perform(i)
    Sidekiq.redis { |r| r.sadd("done", i.to_s) }
  end
end
