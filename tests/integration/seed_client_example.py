# The Python client example from the original specification, verbatim.
import grpc
from payments_service.payments_pb2 import RequestPaymentRequest
from payments_service.payments_pb2_grpc import PaymentServiceStub

# Create channel
channel = grpc.insecure_channel('localhost:7000')
client = PaymentServiceStub(channel)

# Request payment
request = RequestPaymentRequest(
    amount_minor=1250,  # $12.50 in cents
    currency="USD",
    order_id="order-123",
    idempotency_key="unique-key-12345678",
    metadata={"user_id": "user-789"}
)

response = client.RequestPayment(request)
print(f"Payment ID: {response.payment_id}")
print(f"Status: {response.status}")
print(f"Message: {response.message}")

# Get payment
from payments_service.payments_pb2 import GetPaymentRequest

get_request = GetPaymentRequest(payment_id=response.payment_id)
payment = client.GetPayment(get_request)
print(f"Amount: ${payment.amount_minor / 100:.2f}")
print(f"Currency: {payment.currency}")

# Health check
from payments_service.payments_pb2 import HealthRequest

health_request = HealthRequest()
health_response = client.Health(health_request)
print(f"Health: {health_response.status}")
